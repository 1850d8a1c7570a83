//! One error per operation: [`RunError`], [`StopError`], [`SpawnError`].

use std::fmt;

use crate::state::RunId;

/// Why `run` did not start the task; hands the task back when it was not used.
pub enum RunError<T> {
    /// The key was running another task at the instant `run` tried; `task` is yours again.
    Busy {
        /// The task, unused.
        task: T,
        /// The run that holds the key.
        running: RunId,
    },
    /// The repository is shutting down or has shut down; `task` is yours again.
    ShutDown {
        /// The task, unused.
        task: T,
    },
    /// The spawner dropped the run without polling it (for example, its runtime has shut down).
    /// The task was dropped with it and the key is idle again. The run's outcome is
    /// [`Outcome::Lost`](crate::Outcome::Lost), unless it was stopped before the spawner
    /// refused it (a linked signal that had already fired): then it is
    /// [`Outcome::Stopped`](crate::Outcome::Stopped).
    Spawn(SpawnError),
}

impl<T> RunError<T> {
    /// The task, when `run` did not consume it.
    pub fn into_task(self) -> Option<T> {
        match self {
            Self::Busy { task, .. } | Self::ShutDown { task } => Some(task),
            Self::Spawn(_) => None,
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
        matches!(self, Self::Spawn(_))
    }
}

impl<T> fmt::Debug for RunError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { running, .. } => f
                .debug_struct("Busy")
                .field("running", running)
                .finish_non_exhaustive(),
            Self::ShutDown { .. } => f.debug_struct("ShutDown").finish_non_exhaustive(),
            Self::Spawn(error) => f.debug_tuple("Spawn").field(error).finish(),
        }
    }
}

impl<T> fmt::Display for RunError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { running, .. } => write!(f, "the key is already running {running}"),
            Self::ShutDown { .. } => f.write_str("the repository is shut down"),
            Self::Spawn(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl<T> std::error::Error for RunError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(error) => Some(error),
            _ => None,
        }
    }
}

/// The spawner dropped a run without polling it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the spawner dropped {run} without running it")]
pub struct SpawnError {
    pub(crate) run: RunId,
}

impl SpawnError {
    /// The run that was refused.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run
    }
}

/// The run a [`RunningNode`](crate::RunningNode) saw has already ended (it completed, failed, or
/// was stopped by someone else); nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{run} has already ended")]
pub struct StopError {
    pub(crate) run: RunId,
}

impl StopError {
    /// The run the node saw.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run
    }
}
