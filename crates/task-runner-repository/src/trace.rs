//! Tracing of runs, behind the `tracing` feature: every hook the repository has is here.
//!
//! A run gets a span when it starts (`run`, with its `key` and its `run` id); the driver enters
//! it for each poll, so whatever the task itself logs belongs to its run. Events mark the run's
//! start, each item (at TRACE) and its end, once its stream has been dropped and just before its
//! handles resolve.
//!
//! Without the feature, [`RunSpan`] is zero-sized and every method here is empty: the driver
//! and the run carry nothing, and nothing is computed for a subscriber that is not there.

use std::marker::PhantomData;

use crate::bounds::{Error, Key};
use crate::run::RunCore;
use crate::state::RunId;

/// The target of every span and event: the crate's name. Targets match by prefix, so
/// `RUST_LOG=keyrunner=info` selects them.
#[cfg(feature = "tracing")]
const TARGET: &str = "keyrunner_task_runner_repository";

/// A run's span; zero-sized without the `tracing` feature.
pub(crate) struct RunSpan<E> {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
    /// Records the run's end. Made where `E: Debug` is known (at the start), called where it
    /// is not (the driver's destructor).
    #[cfg(feature = "tracing")]
    end: fn(&tracing::Span, &crate::state::Outcome<E>),
    _error: PhantomData<fn() -> E>,
}

/// The guard of a [`RunSpan::enter`].
#[cfg(feature = "tracing")]
pub(crate) type Entered<'a> = tracing::span::Entered<'a>;

/// The guard of a [`RunSpan::enter`]: nothing without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
pub(crate) struct Entered<'a>(PhantomData<&'a ()>);

#[cfg(feature = "tracing")]
impl<E> RunSpan<E> {
    /// Opens the span of run `run` of the key `key()` and records its start (INFO).
    ///
    /// The span has no parent: a run outlives the request that started it. It follows from the
    /// span current here, so a subscriber can link the two.
    pub(crate) fn start<'k, K: Key + 'k>(key: impl FnOnce() -> &'k K, run: RunId) -> Self
    where
        E: Error,
    {
        let span = tracing::info_span!(
            target: TARGET,
            parent: None,
            "run",
            key = ?key(),
            run = run.get(),
        );
        span.follows_from(tracing::Span::current());
        tracing::info!(target: TARGET, parent: &span, "run started");
        Self {
            span,
            end: record_end::<E>,
            _error: PhantomData,
        }
    }

    /// Enters the span for one poll of the run's driver.
    pub(crate) fn enter(&self) -> Entered<'_> {
        self.span.enter()
    }

    /// Records that the run published an item (TRACE), with its sequence number.
    pub(crate) fn progress<P>(&self, core: &RunCore<P, E>) {
        // Fields are evaluated only if the event is enabled: no lock is taken otherwise.
        tracing::trace!(target: TARGET, parent: &self.span, seq = core.seq(), "run progress");
    }

    /// Records how the run ended: call once its stream has been dropped.
    pub(crate) fn ended<P>(&self, core: &RunCore<P, E>) {
        // Every path that ends a run records its outcome before the stream is dropped. Read
        // even when the span is disabled: a filter may still want a failure's WARN.
        let outcome = core.outcome().unwrap_or(crate::state::Outcome::Lost);
        (self.end)(&self.span, &outcome);
    }
}

#[cfg(not(feature = "tracing"))]
impl<E> RunSpan<E> {
    #[inline]
    pub(crate) fn start<'k, K: Key + 'k>(_key: impl FnOnce() -> &'k K, _run: RunId) -> Self
    where
        E: Error,
    {
        Self {
            _error: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn enter(&self) -> Entered<'_> {
        Entered(PhantomData)
    }

    #[inline]
    pub(crate) fn progress<P>(&self, _core: &RunCore<P, E>) {}

    #[inline]
    pub(crate) fn ended<P>(&self, _core: &RunCore<P, E>) {}
}

/// The event for a run's end: INFO when it completed or was stopped, WARN when it failed or
/// was lost, ERROR when it panicked.
#[cfg(feature = "tracing")]
fn record_end<E: std::fmt::Debug>(span: &tracing::Span, outcome: &crate::state::Outcome<E>) {
    use crate::state::Outcome;
    use tracing::{error, info, warn};

    match outcome {
        Outcome::Completed => {
            info!(target: TARGET, parent: span, outcome = "completed", "run completed");
        }
        Outcome::Stopped { reason } => info!(
            target: TARGET,
            parent: span,
            outcome = "stopped",
            reason = reason.as_ref().map(|reason| reason.as_str()),
            "run stopped",
        ),
        Outcome::Failed { error } => warn!(
            target: TARGET,
            parent: span,
            outcome = "failed",
            error = ?error,
            "run failed",
        ),
        Outcome::Panicked { message } => error!(
            target: TARGET,
            parent: span,
            outcome = "panicked",
            panic = message.as_deref(),
            "run panicked",
        ),
        Outcome::Lost => warn!(
            target: TARGET,
            parent: span,
            outcome = "lost",
            "run lost: its executor dropped it before it ended",
        ),
    }
}
