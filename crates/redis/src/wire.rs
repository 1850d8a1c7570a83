//! What Redis stores and publishes, decoded: a key's stored state as an [`Event::State`] with
//! its [`Position`], the messages of a key's channel, and those of a replica's control channel.
//!
//! Positions follow the in-process rule: within run `r`, its start is at seq 0, its items at
//! 1, 2, …, n, its end at n + 1; a key with no stored history is at `0.0`. Redis counts one
//! sequence per key (`q`, continuous across runs, so a gap is visible); a run's position is
//! `q` minus the sequence at which the run started (`a`).

use std::sync::Arc;

use keyrunner_task_runner_repository::{Outcome, Position, RunId, State};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::codec::decode;
use crate::error::Error;
use crate::store::Stored;

/// A key's stored state, decoded, with where it sits.
pub(crate) struct Snapshot<P, E> {
    pub(crate) position: Position,
    pub(crate) state: State<P, E>,
    /// The key's sequence (0 without stored history).
    pub(crate) seq: u64,
    /// The sequence at which the run of `position` started.
    pub(crate) started: u64,
}

/// The stored hash of a key, decoded. `at` names the hash in errors.
pub(crate) fn decode_stored<P, E>(stored: &Stored, at: &str) -> Result<Snapshot<P, E>, Error>
where
    P: DeserializeOwned,
    E: DeserializeOwned,
{
    let number = |text: &str, what: &str| {
        text.parse::<u64>()
            .map_err(|_| Error::corrupt(at, format_args!("{what} is not a number: {text:?}")))
    };
    let progress = |text: &str| -> Result<Option<Arc<P>>, Error> {
        if text.is_empty() {
            Ok(None)
        } else {
            decode("progress", at, text).map(|progress| Some(Arc::new(progress)))
        }
    };
    if stored.s.is_empty() && stored.f.is_empty() && stored.q.is_empty() {
        return Ok(Snapshot {
            position: Position::new(None, 0),
            state: State::Idle {
                last: None,
                progress: None,
            },
            seq: 0,
            started: 0,
        });
    }
    let fence = number(&stored.f, "the fence")?;
    let seq = number(&stored.q, "the sequence")?;
    let started = number(&stored.a, "the run's first sequence")?;
    let state = match stored.s.as_str() {
        "r" => State::Running {
            run: RunId::new(fence),
            progress: progress(&stored.p)?,
        },
        "i" => State::Idle {
            last: if stored.x.is_empty() {
                None
            } else {
                Some(decode("the last outcome", at, &stored.x)?)
            },
            progress: progress(&stored.p)?,
        },
        other => return Err(Error::corrupt(at, format_args!("unknown state {other:?}"))),
    };
    Ok(Snapshot {
        position: Position::new(Some(RunId::new(fence)), seq.saturating_sub(started)),
        state,
        seq,
        started,
    })
}

/// What a key's channel carries: one transition, or one batch of progress items.
#[derive(Deserialize)]
#[serde(bound = "P: DeserializeOwned, E: DeserializeOwned")]
pub(crate) struct Message<P, E> {
    /// The run's fence.
    pub(crate) f: u64,
    /// The key's sequence of the (first) transition.
    pub(crate) q: u64,
    /// For a run starting: the key's sequence before it (0 for a key with no stored history).
    #[serde(default)]
    pub(crate) b: Option<u64>,
    pub(crate) s: Kind,
    /// Snapshot items, in order; item `i` has sequence `q + i`.
    #[serde(default = "none")]
    pub(crate) p: Option<Vec<P>>,
    /// Delta items, in order; item `i` has sequence `q + i`.
    #[serde(default = "none")]
    pub(crate) d: Option<Vec<P>>,
    /// With deltas: the progress accumulated once they are folded in.
    #[serde(default = "none")]
    pub(crate) a: Option<P>,
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
