//! One error per operation: [`Error`] for reads and watches, [`RunError`] for `run`,
//! [`StopError`] for `stop`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use keyrunner_task_runner_repository::RunId;

type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Why a call to Redis, or a value crossing the wire, failed.
///
/// Cheap to clone (listeners and streams may each receive the same error). The Redis client's
/// own error, when there is one, is the [`source`](std::error::Error::source).
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    detail: Option<Arc<str>>,
    source: Option<Source>,
}

/// What kind of [`Error`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Redis could not be reached, or refused the command.
    Unavailable,
    /// Redis did not answer within the configured call timeout. A write may still have happened
    /// (a paused Redis runs the commands it queued when it resumes): its outcome is unknown.
    Timeout,
    /// A key, a progress item or an outcome could not be encoded.
    Encode,
    /// Data under the namespace could not be decoded (foreign or corrupt data).
    Decode,
    /// Data under the namespace does not have the layout this crate writes, or Redis refused a
    /// command for it.
    Corrupt,
    /// The repository is shutting down or has shut down.
    ShutDown,
    /// The builder was given parameters that cannot work together.
    Config,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            detail: None,
            source: None,
        }
    }

    pub(crate) fn detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string().into());
        self
    }

    pub(crate) fn source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn redis(error: redis::RedisError) -> Self {
        use redis::{ErrorKind as Kind, ServerErrorKind as Server};
        let kind = if error.is_timeout() {
            ErrorKind::Timeout
        } else {
            match error.kind() {
                // Redis refused the command itself (a script refusing, a key of the wrong type,
                // an answer of the wrong shape): the data under the namespace is not ours.
                Kind::Server(Server::ResponseError) | Kind::Parse | Kind::UnexpectedReturnType => {
                    ErrorKind::Corrupt
                }
                Kind::Extension if error.code() != Some("BUSY") => ErrorKind::Corrupt,
                _ => ErrorKind::Unavailable,
            }
        };
        Self::new(kind).source(error)
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Self::new(ErrorKind::Timeout).detail(format_args!("no answer within {after:?}"))
    }

    pub(crate) fn shut_down() -> Self {
        Self::new(ErrorKind::ShutDown)
    }

    pub(crate) fn corrupt(at: &str, what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Corrupt).detail(format_args!("`{at}`: {what}"))
    }

    /// What kind of error it is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether Redis did not answer in time: a write may or may not have happened.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// Whether a value could not be encoded or decoded, or the stored layout was not ours.
    #[must_use]
    pub fn is_codec(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Encode | ErrorKind::Decode | ErrorKind::Corrupt
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "redis is unavailable",
            Self::Timeout => "redis did not answer in time",
            Self::Encode => "cannot encode a value",
            Self::Decode => "cannot decode data under the namespace",
            Self::Corrupt => "unexpected data under the namespace",
            Self::ShutDown => "the repository is shut down",
            Self::Config => "invalid configuration",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug.field("kind", &self.kind);
        if let Some(detail) = &self.detail {
            debug.field("detail", detail);
        }
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// Why `run` did not start the task; hands the task back whenever it was not used.
pub enum RunError<F = ()> {
    /// Another run holds the key, on this replica or another; `task` is yours again.
    Busy {
        /// The task, unused.
        task: F,
        /// The run that holds the key (its fence).
        running: RunId,
    },
    /// This replica's repository is shutting down; `task` is yours again.
    ShutDown {
        /// The task, unused.
        task: F,
    },
    /// The run was not started: Redis could not be asked or did not answer in time, or the key
    /// could not be encoded. `task` is yours again.
    ///
    /// When the error [`is_timeout`](Error::is_timeout), the acquisition may still happen when
    /// Redis answers: this replica then releases it at once (the key goes idle with
    /// [`Outcome::Lost`](keyrunner_task_runner_repository::Outcome::Lost)), and the lease
    /// reaper bounds it regardless.
    Failed {
        /// The task, unused.
        task: F,
        /// What went wrong.
        error: Error,
    },
    /// The spawner dropped the run's driver without polling it. The task was dropped with it;
    /// the key was released (idle with `Lost`).
    Spawn {
        /// The run that was refused.
        run: RunId,
    },
}

impl<F> RunError<F> {
    /// The task, when `run` did not consume it.
    pub fn into_task(self) -> Option<F> {
        match self {
            Self::Busy { task, .. } | Self::ShutDown { task } | Self::Failed { task, .. } => {
                Some(task)
            }
            Self::Spawn { .. } => None,
        }
    }

    /// Whether another run holds the key.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// Whether this replica is shutting down.
    #[must_use]
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown { .. })
    }

    /// Whether Redis did not answer in time, so the acquisition may still happen (and be
    /// released at once).
    #[must_use]
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::Failed { error, .. } if error.is_timeout())
    }

    /// The same error without the task: `Send + Sync + 'static`, ready for `?` into a boxed
    /// error.
    pub fn without_task(self) -> RunError<()> {
        match self {
            Self::Busy { running, .. } => RunError::Busy { task: (), running },
            Self::ShutDown { .. } => RunError::ShutDown { task: () },
            Self::Failed { error, .. } => RunError::Failed { task: (), error },
            Self::Spawn { run } => RunError::Spawn { run },
        }
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
            Self::Failed { error, .. } => f
                .debug_struct("Failed")
                .field("error", error)
                .finish_non_exhaustive(),
            Self::Spawn { run } => f.debug_struct("Spawn").field("run", run).finish(),
        }
    }
}

impl<F> fmt::Display for RunError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { running, .. } => write!(f, "the key is already running {running}"),
            Self::ShutDown { .. } => f.write_str("the repository is shut down"),
            Self::Failed { error, .. } if error.is_timeout() => {
                f.write_str("the run was not started; whether redis acquired the key is unknown")
            }
            Self::Failed { .. } => f.write_str("the run was not started"),
            Self::Spawn { run } => write!(f, "the spawner dropped {run} without running it"),
        }
    }
}

impl<F> std::error::Error for RunError<F> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why `stop` changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// No run holds the key.
    #[error("the key is idle")]
    Idle,
    /// The run the node saw has already ended (another run may hold the key now).
    #[error("{run} has already ended")]
    Ended {
        /// The run the node saw.
        run: RunId,
    },
    /// Redis could not be asked, or did not answer in time (then whether the stop happened is
    /// unknown: read the state).
    #[error("the stop did not reach redis")]
    Unavailable(#[source] Error),
}

impl StopError {
    /// The run that had already ended, for [`Ended`](Self::Ended).
    #[must_use]
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            Self::Ended { run } => Some(*run),
            _ => None,
        }
    }

    /// Whether nothing was running any more (idle, or the node's run had ended).
    #[must_use]
    pub fn is_already_ended(&self) -> bool {
        matches!(self, Self::Idle | Self::Ended { .. })
    }
}
