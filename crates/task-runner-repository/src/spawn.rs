//! The executor seam: the repository drives each run through a [`Spawn`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future that drives one run: it polls the task's stream, publishes its items, and records
/// how the run ended. A [`Spawn`] runs it to completion in the background.
///
/// It is `Send + 'static`, so any executor can take it (`tokio::spawn(driver)`,
/// `executor.spawn(driver).detach()`). Dropping it without polling it refuses the run (see
/// [`Spawn`]); dropping it mid-run ends the run as [`Outcome::Lost`](crate::Outcome::Lost).
#[must_use = "a driver does nothing unless polled; dropping it refuses its run"]
pub struct Driver {
    // Two words, like the boxed future it is: an executor's task holding it stays small.
    future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
}

impl Driver {
    pub(crate) fn new(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            future: Box::pin(future),
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.future.as_mut().poll(cx)
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// Something that can run a [`Driver`] to completion in the background: the repository's only
/// tie to an executor.
///
/// The `keyrunner` crate ships ready spawners for tokio and smol behind features; a closure
/// becomes one with [`spawn_fn`].
///
/// # Refusing
///
/// A spawner refuses a run by dropping its driver without polling it (tokio does so when its
/// runtime has shut down). The repository notices and ends that run as
/// [`Outcome::Lost`](crate::Outcome::Lost) (or `Stopped`, if it was stopped first); if the drop
/// happens before `spawn` returns, `run` also returns
/// [`RunError::Spawn`](crate::RunError::Spawn).
pub trait Spawn: Send + Sync + 'static {
    /// Runs `driver` to completion in the background, or drops it to refuse.
    fn spawn(&self, driver: Driver);
}

/// A [`Spawn`] made of a closure: see [`spawn_fn`].
#[derive(Clone, Copy)]
pub struct SpawnFn<F>(F);

/// Makes a spawner of a closure; the closure's argument needs no type annotation.
///
/// ```
/// use keyrunner_task_runner_repository::{TaskRunnerRepository, spawn_fn};
///
/// // Every run on its own thread: fine for a test, wasteful for a service.
/// let repository: TaskRunnerRepository<u32, String> =
///     TaskRunnerRepository::new(spawn_fn(|driver| {
///         std::thread::spawn(move || futures::executor::block_on(driver));
///     }));
/// # drop(repository);
/// ```
pub fn spawn_fn<F>(spawn: F) -> SpawnFn<F>
where
    F: Fn(Driver) + Send + Sync + 'static,
{
    SpawnFn(spawn)
}

impl<F> Spawn for SpawnFn<F>
where
    F: Fn(Driver) + Send + Sync + 'static,
{
    fn spawn(&self, driver: Driver) {
        (self.0)(driver);
    }
}

impl<F> fmt::Debug for SpawnFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnFn").finish_non_exhaustive()
    }
}

/// Stands for the spawner in `Debug` output.
pub(crate) struct DebugSpawn;

impl fmt::Debug for DebugSpawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<spawner>")
    }
}
