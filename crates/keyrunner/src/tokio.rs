//! Running tasks on tokio: [`TokioSpawner`].

use ::tokio::runtime::Handle;

use crate::{Driver, Spawn};

/// A [`Spawn`] that runs every run's driver as a detached task on a tokio runtime.
///
/// When the runtime has shut down, tokio drops newly spawned futures without polling them: the
/// repository notices, `run` returns [`RunError::Spawn`](crate::RunError::Spawn), and the key
/// stays idle. Runs going on when the runtime shuts down — and runs spawned while it is still
/// shutting down, which tokio accepts and drops a moment later — end as
/// [`Outcome::Lost`](crate::Outcome::Lost).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::stream;
/// use keyrunner::tokio::TokioSpawner;
/// use keyrunner::{Outcome, TaskRunnerRepository};
///
/// let builds: TaskRunnerRepository<&str, u32> = TaskRunnerRepository::new(TokioSpawner::current());
/// let handle = builds.run("main", |_| stream::iter([10, 50, 100])).unwrap();
/// assert_eq!(handle.await, Outcome::Completed);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TokioSpawner {
    handle: Handle,
}

impl TokioSpawner {
    /// A spawner on the runtime `handle` belongs to.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// A spawner on the runtime this is called from.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime (see [`Handle::current`]); use
    /// [`try_current`](Self::try_current) to get `None` instead.
    #[must_use]
    pub fn current() -> Self {
        Self::new(Handle::current())
    }

    /// A spawner on the runtime this is called from, or `None` outside a tokio runtime.
    #[must_use]
    pub fn try_current() -> Option<Self> {
        Handle::try_current().ok().map(Self::new)
    }

    /// The handle of the runtime runs are spawned on.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl From<Handle> for TokioSpawner {
    fn from(handle: Handle) -> Self {
        Self::new(handle)
    }
}

impl Spawn for TokioSpawner {
    fn spawn(&self, driver: Driver) {
        // Detached: the repository tracks the run through its own handle.
        drop(self.handle.spawn(driver));
    }
}
