//! The two places this crate builds in-process types from the outside: a [`RunId`] from a fence
//! and an idle [`State`].
//!
//! Kept in one file so that the reshaped in-process API (`RunId::new`, `State::Idle` with the
//! last run's progress, a public `TaskContext` constructor) changes only this file.

use keyrunner_task_runner_repository::{Outcome, RunId, State};

/// The run id of the run with `fence`: a fence is this backend's run id.
pub(crate) fn run_id(fence: u64) -> RunId {
    // `RunId` is `serde(transparent)` over a `u64`, so this cannot fail; `RunId::new` replaces it
    // once the in-process crate has it.
    match serde_json::from_value(serde_json::Value::from(fence)) {
        Ok(id) => id,
        Err(_) => unreachable!("RunId deserializes from any u64"),
    }
}

/// An idle state after a run that ended with `last`, its final progress `progress`.
pub(crate) fn idle<P, E>(last: Option<Outcome<E>>, _progress: Option<P>) -> State<P, E> {
    State::Idle { last }
}
