//! The plain-data view of a key: [`State`], [`Outcome`], [`RunId`] and [`Reason`].

use std::fmt;
use std::sync::Arc;

/// Identifies one run of one key.
///
/// Ids are unique within a repository, and the runs of one key get increasing ids in the
/// order they start (an id is taken inside the transition that starts the run), so a
/// [`RunningNode`](crate::RunningNode) can tell "its" run from a later one on the same key, and
/// an id can serve as a fencing token for the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct RunId(pub(crate) u64);

impl RunId {
    /// The id as a number (unique per repository, increasing).
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run#{}", self.0)
    }
}

/// Why a run was asked to stop: a short, cheaply cloned text.
///
/// ```
/// use keyrunner_task_runner_repository::Reason;
///
/// let reason = Reason::from("user interrupted");
/// assert_eq!(reason.as_str(), "user interrupted");
/// assert_eq!(Reason::superseded().as_str(), "superseded");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Reason(Arc<str>);

impl Reason {
    /// The reason given when [`Conflict::Replace`](crate::Conflict::Replace) stops a run to start
    /// another: `"superseded"`.
    #[must_use]
    pub fn superseded() -> Self {
        Self::from("superseded")
    }

    /// The text of the reason.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Self {
        Self(text.into())
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Self {
        Self(text.into())
    }
}

/// How a run ended.
///
/// `Failed` holds the task's error behind an [`Arc`], so outcomes are cheap to clone and every
/// party awaiting a [`RunHandle`](crate::RunHandle) gets the same error.
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outcome<E> {
    /// The task's stream ended by itself.
    Completed,
    /// The run was stopped: by a [`RunningNode`](crate::RunningNode), a replacement, a shutdown or
    /// a linked [`AbortSignal`](crate::AbortSignal), with the reason given, if any.
    Stopped {
        /// The reason passed to `stop`, if any.
        reason: Option<Reason>,
    },
    /// The task's stream yielded `Err(error)`; the stream was dropped at once.
    Failed(Arc<E>),
    /// The task function or its stream panicked; the panic was caught.
    Panicked {
        /// The panic message, when the payload was a string.
        message: Option<Arc<str>>,
    },
    /// The executor dropped the run before it ended (for example, its runtime shut down, or the
    /// spawner refused the run).
    Lost,
}

impl<E> Clone for Outcome<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Completed => Self::Completed,
            Self::Stopped { reason } => Self::Stopped {
                reason: reason.clone(),
            },
            Self::Failed(error) => Self::Failed(Arc::clone(error)),
            Self::Panicked { message } => Self::Panicked {
                message: message.clone(),
            },
            Self::Lost => Self::Lost,
        }
    }
}

impl<E: PartialEq> PartialEq for Outcome<E> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Completed, Self::Completed) | (Self::Lost, Self::Lost) => true,
            (Self::Stopped { reason: a }, Self::Stopped { reason: b }) => a == b,
            (Self::Failed(a), Self::Failed(b)) => a == b,
            (Self::Panicked { message: a }, Self::Panicked { message: b }) => a == b,
            _ => false,
        }
    }
}

impl<E: Eq> Eq for Outcome<E> {}

impl<E> Outcome<E> {
    /// Whether the stream ended by itself.
    #[must_use]
    pub fn is_completed(&self) -> bool {
        matches!(self, Self::Completed)
    }

    /// Whether the run was stopped.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        matches!(self, Self::Stopped { .. })
    }

    /// Whether the task failed with an error.
    #[must_use]
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Whether the task panicked.
    #[must_use]
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked { .. })
    }

    /// Whether the executor dropped the run before it ended.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost)
    }

    /// The original design's `error` view: `Some` only when the run was stopped with a reason or
    /// failed.
    #[must_use]
    pub fn error(&self) -> Option<LastError<'_, E>> {
        match self {
            Self::Stopped {
                reason: Some(reason),
            } => Some(LastError::Stopped(reason)),
            Self::Failed(error) => Some(LastError::Failed(error)),
            _ => None,
        }
    }
}

/// The original design's `error` field, borrowed from an [`Outcome`].
#[derive(Debug, PartialEq, Eq)]
pub enum LastError<'a, E> {
    /// The run was stopped with this reason.
    Stopped(&'a Reason),
    /// The task failed with this error.
    Failed(&'a E),
}

/// The state of one key, as listeners see it.
///
/// Transitions of a key always follow `Idle → Running { progress: None } → Running {
/// progress: Some(..) } … → Idle { last: Some(outcome) }`.
///
/// ```
/// use keyrunner_task_runner_repository::{Outcome, State};
///
/// let state: State<u32> = State::Idle { last: Some(Outcome::Completed) };
/// assert!(state.is_idle());
/// assert_eq!(state.error(), None);
/// ```
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum State<S, E = std::convert::Infallible> {
    /// No task runs for the key.
    Idle {
        /// How the key's last run ended, while the repository remembers it (see the crate docs,
        /// "Memory").
        last: Option<Outcome<E>>,
    },
    /// A task runs for the key.
    Running {
        /// Which run.
        run: RunId,
        /// The last item the task's stream yielded: `None` until its first item.
        progress: Option<S>,
    },
}

impl<S: Clone, E> Clone for State<S, E> {
    fn clone(&self) -> Self {
        match self {
            Self::Idle { last } => Self::Idle { last: last.clone() },
            Self::Running { run, progress } => Self::Running {
                run: *run,
                progress: progress.clone(),
            },
        }
    }
}

impl<S: PartialEq, E: PartialEq> PartialEq for State<S, E> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Idle { last: a }, Self::Idle { last: b }) => a == b,
            (
                Self::Running {
                    run: a,
                    progress: pa,
                },
                Self::Running {
                    run: b,
                    progress: pb,
                },
            ) => a == b && pa == pb,
            _ => false,
        }
    }
}

impl<S: Eq, E: Eq> Eq for State<S, E> {}

impl<S, E> Default for State<S, E> {
    fn default() -> Self {
        Self::Idle { last: None }
    }
}

impl<S, E> State<S, E> {
    /// Whether no task runs for the key.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self, Self::Idle { .. })
    }

    /// Whether a task runs for the key.
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running { .. })
    }

    /// The running task's last item, if running and it yielded one.
    #[must_use]
    pub fn progress(&self) -> Option<&S> {
        match self {
            Self::Running { progress, .. } => progress.as_ref(),
            Self::Idle { .. } => None,
        }
    }

    /// The last run's outcome, if idle and remembered.
    #[must_use]
    pub fn last_outcome(&self) -> Option<&Outcome<E>> {
        match self {
            Self::Idle { last } => last.as_ref(),
            Self::Running { .. } => None,
        }
    }

    /// The running run's id.
    #[must_use]
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            Self::Running { run, .. } => Some(*run),
            Self::Idle { .. } => None,
        }
    }

    /// The original design's `error` view: `Some` only when idle after a run that was stopped
    /// with a reason or failed.
    #[must_use]
    pub fn error(&self) -> Option<LastError<'_, E>> {
        self.last_outcome().and_then(Outcome::error)
    }
}
