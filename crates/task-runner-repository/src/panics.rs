//! Listener panics are held until the repository's own bookkeeping is done, then resumed.
//!
//! Every transition delivers the new state to listeners, which may panic. A transition that has
//! happened must still be followed by what completes it — firing the signal after a stop,
//! spawning the driver after a start, dropping the stream after the end — or a key would be left
//! idle with a live stream, or running with no driver. So the repository catches such a panic,
//! finishes its step, and only then resumes it.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crate::state::Outcome;

/// A caught panic payload.
pub(crate) type Payload = Box<dyn Any + Send>;

/// The first panic caught during one operation.
#[derive(Default)]
pub(crate) struct Deferred(Option<Payload>);

impl Deferred {
    /// Runs `f`; if it panics, keeps the payload (the first one) and returns `None`.
    pub(crate) fn catch<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => Some(value),
            Err(payload) => {
                match self.0 {
                    None => self.0 = Some(payload),
                    Some(_) => discard(payload),
                }
                None
            }
        }
    }

    /// Drops the panic caught, if any, unseen.
    pub(crate) fn discard(&mut self) {
        if let Some(payload) = self.0.take() {
            discard(payload);
        }
    }

    /// Resumes the panic caught, if any; while this thread is already unwinding, drops it
    /// instead (a second panic would abort the process).
    #[inline]
    pub(crate) fn resume(&mut self) {
        // Called after every step that may have caught a panic, almost always with none.
        if let Some(payload) = self.0.take() {
            resume_or_discard(payload);
        }
    }
}

/// Resumes `payload`, or drops it if this thread is already unwinding.
#[cold]
fn resume_or_discard(payload: Payload) {
    if std::thread::panicking() {
        discard(payload);
    } else {
        panic::resume_unwind(payload);
    }
}

/// Drops a payload nobody will see; one whose destructor panics is leaked rather than allowed
/// to unwind through the repository.
pub(crate) fn discard(payload: Payload) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        std::mem::forget(again);
    }
}

/// The outcome of a run whose task (or progress type) panicked with `payload`: its message, if
/// it has one.
pub(crate) fn panicked<E>(payload: Payload) -> Outcome<E> {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| Arc::from(*text))
        .or_else(|| {
            payload
                .downcast_ref::<String>()
                .map(|text| Arc::from(text.as_str()))
        });
    discard(payload);
    Outcome::Panicked { message }
}
