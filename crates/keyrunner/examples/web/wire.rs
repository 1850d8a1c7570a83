//! The JSON form of a key's state, as the page and other clients read it.
//!
//! The shape is the one the repository's `serde` feature is being changed to (internally
//! tagged, `snake_case`, friendly to JavaScript): once it lands, this module goes and the
//! handlers serialize [`State`] directly.
//!
//! ```json
//! {"type":"idle","last":null,"progress":null}
//! {"type":"running","run":7,"progress":"You asked"}
//! {"type":"idle","last":{"type":"stopped","reason":"stopped by user"},"progress":null}
//! ```

use std::fmt::Display;

use keyrunner::{Outcome, State};
use serde::Serialize;

/// A key's state, borrowed for serialization.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StateJson<'a> {
    /// No agent runs for the key.
    Idle {
        /// How the last run ended, while the key is remembered.
        last: Option<OutcomeJson<'a>>,
        /// The last run's final reply. Always `null` for now: today's idle state does not keep
        /// it, so clients keep the last reply they saw.
        progress: Option<&'a str>,
    },
    /// An agent runs for the key.
    Running {
        /// The run's id, as a number.
        run: u64,
        /// The reply so far; `null` until the first token.
        progress: Option<&'a str>,
    },
}

/// How a run ended.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum OutcomeJson<'a> {
    Completed,
    Stopped { reason: Option<&'a str> },
    Failed { error: String },
    Panicked { message: Option<&'a str> },
    Lost,
}

impl<'a> StateJson<'a> {
    pub(crate) fn new<E: Display>(state: &'a State<String, E>) -> Self {
        match state {
            State::Idle { last, .. } => Self::Idle {
                last: last.as_ref().map(OutcomeJson::new),
                progress: None,
            },
            State::Running { run, progress } => Self::Running {
                run: run.get(),
                progress: progress.as_deref().map(String::as_str),
            },
        }
    }
}

impl<'a> OutcomeJson<'a> {
    fn new<E: Display>(outcome: &'a Outcome<E>) -> Self {
        match outcome {
            Outcome::Completed => Self::Completed,
            Outcome::Stopped { reason } => Self::Stopped {
                reason: reason.as_ref().map(|reason| reason.as_str()),
            },
            Outcome::Failed { error } => Self::Failed {
                error: error.to_string(),
            },
            Outcome::Panicked { message } => Self::Panicked {
                message: message.as_deref(),
            },
            Outcome::Lost => Self::Lost,
        }
    }
}
