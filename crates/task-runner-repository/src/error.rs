//! One error per operation: [`RunError`] and [`StopError`].

use std::fmt;

use crate::state::RunId;

/// Why `run` did not start the task; hands the task back when it was not used.
///
/// `RunError` with no parameter (`RunError<()>`) is the task-free form: `Send + Sync + 'static`
/// whatever the task, so it boxes into `Box<dyn Error + Send + Sync>` or an `anyhow::Error`.
/// [`without_task`](Self::without_task) turns one into the other:
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use keyrunner_task_runner_repository::{RunError, TaskRunnerRepository, spawn_fn};
///
/// let repository: TaskRunnerRepository<&str, u32> = TaskRunnerRepository::new(spawn_fn(|driver| {
///     std::thread::spawn(move || futures::executor::block_on(driver));
/// }));
/// let _first = repository.run("job", |_| stream::pending::<u32>()).unwrap();
///
/// fn second(
///     repository: &TaskRunnerRepository<&'static str, u32>,
/// ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     // A task that is not `Sync` (it holds a `Cell`) still boxes, once it is let go.
///     let cell = std::cell::Cell::new(1);
///     let task = move |_| stream::iter([cell.get()]);
///     repository.run("job", task).map_err(RunError::without_task)?.detach();
///     Ok(())
/// }
/// let error = second(&repository).unwrap_err();
/// assert_eq!(error.to_string(), "the key is already running run#1");
/// # });
/// ```
pub enum RunError<F = ()> {
    /// The key was running another task at the instant `run` tried; `task` is yours again.
    Busy {
        /// The task, unused.
        task: F,
        /// The run that holds the key.
        running: RunId,
    },
    /// The repository is shutting down or has shut down; `task` is yours again.
    ShutDown {
        /// The task, unused.
        task: F,
    },
    /// The spawner dropped the run without polling it (for example, its runtime has shut down).
    /// The task was dropped with it and the key is idle again. The run's outcome is
    /// [`Outcome::Lost`](crate::Outcome::Lost), unless it was stopped before the spawner
    /// refused it (a linked signal that had already fired): then it is
    /// [`Outcome::Stopped`](crate::Outcome::Stopped).
    Spawn {
        /// The run that was refused.
        run: RunId,
    },
}

impl<F> RunError<F> {
    /// The task, when `run` did not consume it.
    pub fn into_task(self) -> Option<F> {
        self.into_parts().1
    }

    /// The error without the task: `Send + Sync + 'static`, ready to be boxed.
    pub fn without_task(self) -> RunError {
        self.into_parts().0
    }

    /// The task-free error and the task, when `run` did not consume it.
    pub fn into_parts(self) -> (RunError, Option<F>) {
        match self {
            Self::Busy { task, running } => (RunError::Busy { task: (), running }, Some(task)),
            Self::ShutDown { task } => (RunError::ShutDown { task: () }, Some(task)),
            Self::Spawn { run } => (RunError::Spawn { run }, None),
        }
    }

    /// Whether the key was running another task.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// Whether the repository refused the run because it is shutting down.
    #[must_use]
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown { .. })
    }

    /// Whether the spawner refused the run.
    #[must_use]
    pub fn is_spawn(&self) -> bool {
        matches!(self, Self::Spawn { .. })
    }
}

impl<F> fmt::Debug for RunError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { running, .. } => f
                .debug_struct("Busy")
                .field("running", running)
                .finish_non_exhaustive(),
            Self::ShutDown { .. } => f.debug_struct("ShutDown").finish_non_exhaustive(),
            Self::Spawn { run } => f.debug_struct("Spawn").field("run", run).finish(),
        }
    }
}

impl<F> fmt::Display for RunError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { running, .. } => write!(f, "the key is already running {running}"),
            Self::ShutDown { .. } => f.write_str("the repository is shut down"),
            Self::Spawn { run } => write!(f, "the spawner dropped {run} without running it"),
        }
    }
}

/// No source: every variant says all there is in its own sentence.
impl<F> std::error::Error for RunError<F> {}

/// Why a stop changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    /// The key runs nothing (from `stop(&key, ..)`).
    #[error("the key is idle")]
    Idle,
    /// The run a [`RunningNode`](crate::RunningNode) saw has already ended (it completed, failed,
    /// or was stopped by someone else).
    #[error("{run} has already ended")]
    Ended {
        /// The run the node saw.
        run: RunId,
    },
}

impl StopError {
    /// The run that had ended, for [`StopError::Ended`].
    #[must_use]
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            Self::Idle => None,
            Self::Ended { run } => Some(*run),
        }
    }
}
