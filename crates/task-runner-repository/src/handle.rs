//! [`RunHandle`]: awaits one run's outcome.

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::abort::AbortSignal;
use crate::bounds::{Key, Value};
use crate::run::Run;
use crate::state::{Outcome, RunId};
use crate::wait::WaitSlot;

/// A run seen from its handles, whatever the repository's key, progress and hasher types.
pub(crate) trait HandleRun<E>: Send + Sync {
    fn id(&self) -> RunId;
    fn signal(&self) -> AbortSignal;
    fn is_finished(&self) -> bool;
    fn outcome(&self) -> Option<Outcome<E>>;
    fn poll_outcome(&self, slot: &mut Option<WaitSlot>, cx: &mut Context<'_>) -> Poll<Outcome<E>>;
    fn unregister(&self, slot: WaitSlot);
}

impl<K, P, E, H> HandleRun<E> for Run<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Send + Sync + 'static,
{
    fn id(&self) -> RunId {
        self.core.id()
    }

    fn signal(&self) -> AbortSignal {
        self.core.signal()
    }

    fn is_finished(&self) -> bool {
        self.core.is_finished()
    }

    fn outcome(&self) -> Option<Outcome<E>> {
        if !self.core.is_finished() {
            return None;
        }
        Some(self.core.outcome().unwrap_or(Outcome::Lost))
    }

    fn poll_outcome(&self, slot: &mut Option<WaitSlot>, cx: &mut Context<'_>) -> Poll<Outcome<E>> {
        self.core.poll_outcome(slot, cx)
    }

    fn unregister(&self, slot: WaitSlot) {
        self.core.unregister(slot);
    }
}

/// Awaits the outcome of one run; resolves once the run's stream has been dropped.
///
/// Cloning gives another handle to the same run, so several parties can await it. Holding a
/// handle keeps the key's last outcome remembered (see the crate docs, "Memory"), and the
/// run's retained deltas with it.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use keyrunner_task_runner_repository::{Outcome, TaskRunnerRepository, spawn_fn};
///
/// let repository: TaskRunnerRepository<&str, u32> =
///     TaskRunnerRepository::new(spawn_fn(|driver| {
///         std::thread::spawn(move || futures::executor::block_on(driver));
///     }));
/// let handle = repository.run("job", |_| stream::iter([1, 2, 3])).unwrap();
/// let other = handle.clone();
/// assert_eq!(handle.await, Outcome::Completed);
/// assert_eq!(other.await, Outcome::Completed);
/// # });
/// ```
#[must_use = "dropping a RunHandle detaches it: the run goes on"]
pub struct RunHandle<E> {
    run: Arc<dyn HandleRun<E>>,
    /// The slot this handle's waker is kept in while it waits.
    waiting: Option<WaitSlot>,
}

impl<E> RunHandle<E> {
    pub(crate) fn new(run: Arc<dyn HandleRun<E>>) -> Self {
        Self { run, waiting: None }
    }

    /// The run this handle awaits.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run.id()
    }

    /// The run's abort signal (fired when the run is asked to stop).
    #[must_use]
    pub fn abort_signal(&self) -> AbortSignal {
        self.run.signal()
    }

    /// Whether the run has ended and its stream has been dropped.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.run.is_finished()
    }

    /// The run's outcome, once it is finished.
    #[must_use]
    pub fn outcome(&self) -> Option<Outcome<E>> {
        self.run.outcome()
    }

    /// Lets the run go on without this handle (the same as dropping it).
    pub fn detach(self) {}
}

impl<E> Clone for RunHandle<E> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.run))
    }
}

impl<E> Future for RunHandle<E> {
    type Output = Outcome<E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<E>> {
        let this = &mut *self;
        this.run.poll_outcome(&mut this.waiting, cx)
    }
}

impl<E> Drop for RunHandle<E> {
    fn drop(&mut self) {
        if let Some(slot) = self.waiting.take() {
            self.run.unregister(slot);
        }
    }
}

impl<E> Unpin for RunHandle<E> {}

impl<E> fmt::Debug for RunHandle<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle")
            .field("run", &self.run_id())
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
