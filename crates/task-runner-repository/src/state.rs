//! The plain-data view of a key: [`State`], [`Outcome`], [`RunId`], [`Reason`] and [`NoError`].

use std::fmt;
use std::sync::Arc;

/// The default error type of a repository whose tasks cannot fail: it has no values.
///
/// It implements every trait an error type of this crate may need (including `Serialize` and
/// `Deserialize` under the `serde` feature), so `State<P>` and `Outcome` work with every
/// feature on and no error type named.
///
/// ```
/// use keyrunner_task_runner_repository::{NoError, Outcome};
///
/// let outcome: Outcome = Outcome::Completed; // `Outcome<NoError>`
/// assert!(outcome.error().is_none());
/// fn never(error: NoError) -> u32 {
///     match error {}
/// }
/// # let _ = never;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NoError {}

impl fmt::Display for NoError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for NoError {}

/// Identifies one run of one key.
///
/// Ids are unique within a repository, start at 1, and the runs of one key get increasing ids
/// in the order they start (an id is taken inside the transition that starts the run), so a
/// [`RunningNode`](crate::RunningNode) can tell "its" run from a later one on the same key, and
/// an id can serve as a fencing token for the key.
///
/// ```
/// use keyrunner_task_runner_repository::RunId;
///
/// let run = RunId::new(7);
/// assert_eq!(run.get(), 7);
/// assert_eq!(run.to_string(), "run#7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct RunId(u64);

impl RunId {
    /// A run id from its number; another backend (a distributed one, say) uses its own fence.
    #[must_use]
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The id as a number.
    #[must_use]
    pub const fn get(self) -> u64 {
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
///
/// With the `serde` feature, an outcome is an object tagged by `"type"` (see
/// `docs/wire-format.md`):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use keyrunner_task_runner_repository::{Outcome, Reason};
///
/// let stopped: Outcome = Outcome::Stopped { reason: Some(Reason::from("user")) };
/// assert_eq!(
///     serde_json::to_string(&stopped).unwrap(),
///     r#"{"type":"stopped","reason":"user"}"#,
/// );
/// # }
/// ```
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
pub enum Outcome<E = NoError> {
    /// The task's stream ended by itself.
    Completed,
    /// The run was stopped: by a [`RunningNode`](crate::RunningNode), a `stop` of its key, a
    /// replacement, a shutdown or a linked [`AbortSignal`](crate::AbortSignal), with the reason
    /// given, if any.
    Stopped {
        /// The reason passed to `stop`, if any.
        reason: Option<Reason>,
    },
    /// The task's stream yielded an error; the stream was dropped at once.
    Failed {
        /// The task's error.
        error: Arc<E>,
    },
    /// The task function, its stream, or its progress type panicked; the panic was caught.
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
            Self::Failed { error } => Self::Failed {
                error: Arc::clone(error),
            },
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
            (Self::Failed { error: a }, Self::Failed { error: b }) => a == b,
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
        matches!(self, Self::Failed { .. })
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
            Self::Failed { error } => Some(LastError::Failed(error)),
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

/// The state of one key.
///
/// Transitions of a key always follow `Idle → Running { progress: None } → Running {
/// progress: Some(..) } … → Idle { last: Some(outcome), .. }`. Progress is the task's
/// accumulated progress (its last snapshot, with the deltas since folded in); it is shared, so
/// cloning a state never copies it.
///
/// ```
/// use std::sync::Arc;
///
/// use keyrunner_task_runner_repository::{Outcome, State};
///
/// let state: State<String> = State::Idle {
///     last: Some(Outcome::Completed),
///     progress: Some(Arc::new("Hello".to_owned())),
/// };
/// assert!(state.is_idle());
/// assert_eq!(state.progress().map(String::as_str), Some("Hello"));
/// assert_eq!(state.error(), None);
/// ```
///
/// With the `serde` feature, a state is an object tagged by `"type"` (see
/// `docs/wire-format.md`):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use std::sync::Arc;
///
/// use keyrunner_task_runner_repository::{RunId, State};
///
/// let running: State<String> = State::Running {
///     run: RunId::new(7),
///     progress: Some(Arc::new("Hel".to_owned())),
/// };
/// assert_eq!(
///     serde_json::to_string(&running).unwrap(),
///     r#"{"type":"running","run":7,"progress":"Hel"}"#,
/// );
/// # }
/// ```
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
pub enum State<P, E = NoError> {
    /// No task runs for the key.
    Idle {
        /// How the key's last run ended, while the repository remembers it (see the crate docs,
        /// "Memory").
        last: Option<Outcome<E>>,
        /// The last run's final progress, while the repository remembers it.
        progress: Option<Arc<P>>,
    },
    /// A task runs for the key.
    Running {
        /// Which run.
        run: RunId,
        /// The task's progress so far: `None` until its first item.
        progress: Option<Arc<P>>,
    },
}

impl<P, E> Clone for State<P, E> {
    fn clone(&self) -> Self {
        match self {
            Self::Idle { last, progress } => Self::Idle {
                last: last.clone(),
                progress: progress.clone(),
            },
            Self::Running { run, progress } => Self::Running {
                run: *run,
                progress: progress.clone(),
            },
        }
    }
}

impl<P: PartialEq, E: PartialEq> PartialEq for State<P, E> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Idle {
                    last: a,
                    progress: pa,
                },
                Self::Idle {
                    last: b,
                    progress: pb,
                },
            ) => a == b && pa == pb,
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

impl<P: Eq, E: Eq> Eq for State<P, E> {}

/// A key that never ran: idle, no outcome, no progress.
impl<P, E> Default for State<P, E> {
    fn default() -> Self {
        Self::Idle {
            last: None,
            progress: None,
        }
    }
}

impl<P, E> State<P, E> {
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

    /// The progress: the running task's so far, or the last run's final progress.
    #[must_use]
    pub fn progress(&self) -> Option<&P> {
        match self {
            Self::Running { progress, .. } | Self::Idle { progress, .. } => progress.as_deref(),
        }
    }

    /// The last run's outcome, if idle and remembered.
    #[must_use]
    pub fn last_outcome(&self) -> Option<&Outcome<E>> {
        match self {
            Self::Idle { last, .. } => last.as_ref(),
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
