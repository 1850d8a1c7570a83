//! The executor seam: the repository drives each run's stream through a [`Spawn`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send`, `'static` future: what a [`Spawn`] is asked to run.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Something that can run a future to completion in the background: the repository's only tie
/// to an executor.
///
/// Any `Fn(BoxFuture) + Send + Sync + 'static` closure is a spawner. The `keyrunner` crate ships
/// ready ones for tokio and smol behind features.
///
/// # Refusing
///
/// A spawner refuses a future by dropping it without polling it (tokio does so when its runtime
/// has shut down). The repository notices and ends that run as
/// [`Outcome::Lost`](crate::Outcome::Lost); if the drop happens before `spawn` returns, `run`
/// also returns [`RunError::Spawn`](crate::RunError::Spawn).
///
/// ```
/// use keyrunner_task_runner_repository::{BoxFuture, TaskRunnerRepository};
///
/// // Every run on its own thread: fine for a test, wasteful for a service.
/// let repository: TaskRunnerRepository<u32, String> =
///     TaskRunnerRepository::new(|future: BoxFuture| {
///         std::thread::spawn(move || futures::executor::block_on(future));
///     });
/// # drop(repository);
/// ```
pub trait Spawn: Send + Sync + 'static {
    /// Runs `future` to completion in the background, or drops it to refuse.
    fn spawn(&self, future: BoxFuture);
}

impl<F> Spawn for F
where
    F: Fn(BoxFuture) + Send + Sync + 'static,
{
    fn spawn(&self, future: BoxFuture) {
        self(future);
    }
}

pub(crate) struct DebugSpawn;

impl fmt::Debug for DebugSpawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<spawner>")
    }
}
