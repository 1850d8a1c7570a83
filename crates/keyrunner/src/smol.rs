//! Running tasks on smol: [`SmolSpawner`].

use std::fmt;
use std::sync::Arc;

use ::smol::Executor;

use crate::{Driver, Spawn};

/// A [`Spawn`] that runs every run's driver as a detached task on a smol executor: the global
/// one ([`global`](Self::global)) or one of your own ([`new`](Self::new)).
///
/// An executor of your own runs tasks only while something drives it (`executor.run(..)`).
///
/// ```
/// use std::sync::Arc;
///
/// use futures::stream;
/// use keyrunner::smol::SmolSpawner;
/// use keyrunner::{Outcome, TaskRunnerRepository};
///
/// let executor = Arc::new(smol::Executor::new());
/// let syncs: TaskRunnerRepository<u64, usize> =
///     TaskRunnerRepository::new(SmolSpawner::new(Arc::clone(&executor)));
///
/// let outcome = smol::block_on(executor.run(async {
///     let handle = syncs.run(42, |_| stream::iter(1..=3)).unwrap();
///     handle.await
/// }));
/// assert_eq!(outcome, Outcome::Completed);
/// ```
#[derive(Clone)]
pub struct SmolSpawner {
    executor: Option<Arc<Executor<'static>>>,
}

impl SmolSpawner {
    /// A spawner on smol's global executor (`smol::spawn`), which runs on threads of its own.
    ///
    /// ```
    /// use futures::stream;
    /// use keyrunner::smol::SmolSpawner;
    /// use keyrunner::{Outcome, TaskRunnerRepository};
    ///
    /// let syncs: TaskRunnerRepository<u64, usize> = TaskRunnerRepository::new(SmolSpawner::global());
    /// let handle = syncs.run(7, |_| stream::iter(1..=3)).unwrap();
    /// assert_eq!(smol::block_on(handle), Outcome::Completed);
    /// ```
    #[must_use]
    pub fn global() -> Self {
        Self { executor: None }
    }

    /// A spawner on `executor`.
    #[must_use]
    pub fn new(executor: Arc<Executor<'static>>) -> Self {
        Self {
            executor: Some(executor),
        }
    }

    /// The executor runs are spawned on, or `None` for smol's global executor.
    #[must_use]
    pub fn executor(&self) -> Option<&Arc<Executor<'static>>> {
        self.executor.as_ref()
    }
}

impl From<Arc<Executor<'static>>> for SmolSpawner {
    fn from(executor: Arc<Executor<'static>>) -> Self {
        Self::new(executor)
    }
}

impl Spawn for SmolSpawner {
    fn spawn(&self, driver: Driver) {
        // Detached: the repository tracks the run through its own handle.
        match &self.executor {
            Some(executor) => executor.spawn(driver).detach(),
            None => ::smol::spawn(driver).detach(),
        }
    }
}

impl fmt::Debug for SmolSpawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let executor = match self.executor {
            Some(_) => "own",
            None => "global",
        };
        f.debug_struct("SmolSpawner")
            .field("executor", &format_args!("{executor}"))
            .finish()
    }
}
