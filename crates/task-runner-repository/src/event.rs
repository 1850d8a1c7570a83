//! What listeners and streams see: [`Event`]s, each at a [`Position`] in its key's history.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::state::{NoError, RunId, State};

/// Where an event sits in its key's history: a run and a sequence number within it.
///
/// Within run `r`, the run's start is at seq 0, its progress items at 1, 2, …, n, and its end at
/// n + 1. A key that never ran (or was forgotten) is at `0.0`. Positions of one key grow with
/// every event (runs of a key get increasing ids), so they order a key's history.
///
/// Its text form, `"{run}.{seq}"`, is made for Server-Sent Events ids: a client that reconnects
/// sends it back (`Last-Event-ID`), and [`stream_after`] resumes right after it.
///
/// ```
/// use keyrunner_task_runner_repository::{Position, RunId};
///
/// let position: Position = "7.3".parse().unwrap();
/// assert_eq!(position.run_id(), Some(RunId::new(7)));
/// assert_eq!(position.seq(), 3);
/// assert_eq!(position.to_string(), "7.3");
/// assert!(position < "7.4".parse().unwrap());
/// assert!("0.0".parse::<Position>().unwrap().run_id().is_none());
/// ```
///
/// [`stream_after`]: crate::Observer::stream_after
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
pub struct Position {
    run: u64,
    seq: u64,
}

impl Position {
    /// The position of a key that never ran.
    pub(crate) const NEVER: Self = Self { run: 0, seq: 0 };

    /// A position: `run` (`None` for a key that never ran) and a sequence number within it.
    #[must_use]
    pub const fn new(run: Option<RunId>, seq: u64) -> Self {
        let run = match run {
            Some(run) => run.get(),
            None => 0,
        };
        Self { run, seq }
    }

    pub(crate) const fn at(run: RunId, seq: u64) -> Self {
        Self {
            run: run.get(),
            seq,
        }
    }

    /// The run, or `None` for a key that never ran.
    #[must_use]
    pub const fn run_id(self) -> Option<RunId> {
        match self.run {
            0 => None,
            run => Some(RunId::new(run)),
        }
    }

    /// The sequence number within the run.
    #[must_use]
    pub const fn seq(self) -> u64 {
        self.seq
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.run, self.seq)
    }
}

/// The text is not a [`Position`] (`"{run}.{seq}"`, two unsigned integers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a position (expected `run.seq`, two unsigned integers)")]
pub struct ParsePositionError(());

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (run, seq) = text.split_once('.').ok_or(ParsePositionError(()))?;
        let number = |part: &str| {
            // `u64::from_str` accepts a leading `+`; a position never has one.
            if part.starts_with('+') {
                return Err(ParsePositionError(()));
            }
            part.parse::<u64>().map_err(|_| ParsePositionError(()))
        };
        Ok(Self {
            run: number(run)?,
            seq: number(seq)?,
        })
    }
}

impl From<Position> for String {
    fn from(position: Position) -> Self {
        position.to_string()
    }
}

impl TryFrom<String> for Position {
    type Error = ParsePositionError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// One change of a key, as listeners and streams see it.
///
/// Two kinds: a [`State`](Event::State) replaces whatever the watcher had (a run's start, each
/// snapshot item, a run's end, the first event of a stream, a resync); a
/// [`Delta`](Event::Delta) is appended to the running run's progress (see
/// [`Delta`](crate::Delta)). Cloning an event never copies progress or errors: they are
/// shared.
///
/// With the `serde` feature, an event is an object tagged by `"type"` (see
/// `docs/wire-format.md`):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use std::sync::Arc;
///
/// use keyrunner_task_runner_repository::Event;
///
/// let delta: Event<String> = Event::Delta {
///     position: "7.1".parse().unwrap(),
///     delta: Arc::new("Hel".to_owned()),
/// };
/// assert_eq!(
///     serde_json::to_string(&delta).unwrap(),
///     r#"{"type":"delta","position":"7.1","delta":"Hel"}"#,
/// );
/// # }
/// ```
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
pub enum Event<P, E = NoError> {
    /// The key's state at `position`: replace what you had with it.
    State {
        /// Where this state sits in the key's history.
        position: Position,
        /// The state, with the accumulated progress.
        state: State<P, E>,
    },
    /// A delta of the running run's progress, to fold into what you had.
    Delta {
        /// Where this delta sits in the key's history.
        position: Position,
        /// The delta.
        delta: Arc<P>,
    },
}

impl<P, E> Event<P, E> {
    /// Where the event sits in its key's history.
    #[must_use]
    pub fn position(&self) -> Position {
        match self {
            Self::State { position, .. } | Self::Delta { position, .. } => *position,
        }
    }

    /// The state, for a [`State`](Event::State) event.
    #[must_use]
    pub fn state(&self) -> Option<&State<P, E>> {
        match self {
            Self::State { state, .. } => Some(state),
            Self::Delta { .. } => None,
        }
    }

    /// The delta, for a [`Delta`](Event::Delta) event.
    #[must_use]
    pub fn delta(&self) -> Option<&P> {
        match self {
            Self::Delta { delta, .. } => Some(delta),
            Self::State { .. } => None,
        }
    }

    /// The state, for a [`State`](Event::State) event.
    #[must_use]
    pub fn into_state(self) -> Option<State<P, E>> {
        match self {
            Self::State { state, .. } => Some(state),
            Self::Delta { .. } => None,
        }
    }
}

impl<P, E> Clone for Event<P, E> {
    fn clone(&self) -> Self {
        match self {
            Self::State { position, state } => Self::State {
                position: *position,
                state: state.clone(),
            },
            Self::Delta { position, delta } => Self::Delta {
                position: *position,
                delta: Arc::clone(delta),
            },
        }
    }
}

impl<P: PartialEq, E: PartialEq> PartialEq for Event<P, E> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::State { position, state },
                Self::State {
                    position: other_position,
                    state: other_state,
                },
            ) => position == other_position && state == other_state,
            (
                Self::Delta { position, delta },
                Self::Delta {
                    position: other_position,
                    delta: other_delta,
                },
            ) => position == other_position && delta == other_delta,
            _ => false,
        }
    }
}

impl<P: Eq, E: Eq> Eq for Event<P, E> {}
