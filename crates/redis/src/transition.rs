//! [`Transition`]: a key's state as listeners see it, with its place in the key's history; and
//! the decoding of what Redis stores and publishes.

use std::fmt;

use keyrunner_task_runner_repository::{Outcome, RunId, State};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::codec::decode;
use crate::compat::{idle, run_id};
use crate::error::Error;
use crate::store::Stored;

/// One state of a key, as every replica's listeners see it, with its position in the key's
/// history.
///
/// Positions order a key's transitions cluster-wide: `seq` grows by one per transition (a run
/// starting, each item of progress, the run ending) and `fence` identifies the run. A listener
/// never sees a `seq` twice or going back, except after Redis lost its data (see the crate docs,
/// "Engine restarts").
///
/// ```
/// use keyrunner_redis::Transition;
/// use keyrunner_task_runner_repository::State;
///
/// fn describe(transition: &Transition<String, String>) -> String {
///     match transition.state() {
///         State::Running { progress, .. } => format!("#{} running: {progress:?}", transition.seq()),
///         State::Idle { last, .. } => format!("#{} idle after {last:?}", transition.seq()),
///     }
/// }
/// # let _ = describe;
/// ```
pub struct Transition<P, E> {
    pub(crate) state: State<P, E>,
    pub(crate) fence: Option<u64>,
    pub(crate) seq: u64,
}

impl<P, E> Transition<P, E> {
    /// The key's state.
    #[must_use]
    pub fn state(&self) -> &State<P, E> {
        &self.state
    }

    /// The key's state, by value.
    #[must_use]
    pub fn into_state(self) -> State<P, E> {
        self.state
    }

    /// The run this state belongs to: the running run, or the run that ended last. `None` for a
    /// key with no stored history.
    #[must_use]
    pub fn fence(&self) -> Option<RunId> {
        self.fence.map(run_id)
    }

    /// The key's sequence number at this state (0 for a key with no stored history).
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl<P: Clone, E> Clone for Transition<P, E> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            fence: self.fence,
            seq: self.seq,
        }
    }
}

impl<P: PartialEq, E: PartialEq> PartialEq for Transition<P, E> {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state && self.fence == other.fence && self.seq == other.seq
    }
}

impl<P: fmt::Debug, E: fmt::Debug> fmt::Debug for Transition<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transition")
            .field("state", &self.state)
            .field("fence", &self.fence)
            .field("seq", &self.seq)
            .finish()
    }
}

/// The stored hash of a key, decoded. `at` names the hash in errors.
pub(crate) fn decode_stored<P, E>(stored: &Stored, at: &str) -> Result<Transition<P, E>, Error>
where
    P: DeserializeOwned,
    E: DeserializeOwned,
{
    let number = |text: &str, what: &str| {
        text.parse::<u64>()
            .map_err(|_| Error::corrupt(at, format_args!("{what} is not a number: {text:?}")))
    };
    let progress = |text: &str| -> Result<Option<P>, Error> {
        if text.is_empty() {
            Ok(None)
        } else {
            decode("progress", at, text).map(Some)
        }
    };
    Ok(match stored.s.as_str() {
        "" if stored.f.is_empty() && stored.q.is_empty() => Transition {
            state: idle(None, None),
            fence: None,
            seq: 0,
        },
        "r" => {
            let fence = number(&stored.f, "the fence")?;
            Transition {
                state: State::Running {
                    run: run_id(fence),
                    progress: progress(&stored.p)?,
                },
                fence: Some(fence),
                seq: number(&stored.q, "the sequence")?,
            }
        }
        "i" => {
            let last = if stored.x.is_empty() {
                None
            } else {
                Some(decode("the last outcome", at, &stored.x)?)
            };
            Transition {
                state: idle(last, progress(&stored.p)?),
                fence: Some(number(&stored.f, "the fence")?),
                seq: number(&stored.q, "the sequence")?,
            }
        }
        other => return Err(Error::corrupt(at, format_args!("unknown state {other:?}"))),
    })
}

/// What a key's channel carries: one transition, or one batch of progress items.
#[derive(Deserialize)]
#[serde(bound = "P: DeserializeOwned, E: DeserializeOwned")]
pub(crate) struct Event<P, E> {
    /// The run's fence.
    pub(crate) f: u64,
    /// The sequence of the (first) transition.
    pub(crate) q: u64,
    /// For a run starting: the key's sequence before it (0 for a key with no stored history).
    #[serde(default)]
    pub(crate) b: Option<u64>,
    pub(crate) s: Kind,
    /// Progress items, in order; item `i` has sequence `q + i`.
    #[serde(default = "none")]
    pub(crate) p: Option<Vec<P>>,
    /// The outcome of an ended run.
    #[serde(default = "none")]
    pub(crate) x: Option<Outcome<E>>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum Kind {
    #[serde(rename = "r")]
    Running,
    #[serde(rename = "i")]
    Idle,
}

/// What a replica's control channel carries: one of its runs ended elsewhere (stopped from
/// another replica, or reaped).
#[derive(Deserialize)]
#[serde(bound = "E: DeserializeOwned")]
pub(crate) struct Control<E> {
    /// The key's member.
    pub(crate) k: String,
    pub(crate) f: u64,
    pub(crate) x: Outcome<E>,
}
