//! States and outcomes are plain data: they survive a round trip through JSON.
#![cfg(feature = "serde")]

use std::sync::Arc;

use keyrunner_task_runner_repository::{Outcome, Reason, State};

fn round_trip(state: &State<String, String>) -> State<String, String> {
    let json = serde_json::to_string(state).expect("serializes");
    serde_json::from_str(&json).expect("deserializes")
}

#[test]
fn every_outcome_round_trips() {
    let outcomes = [
        Outcome::Completed,
        Outcome::Stopped { reason: None },
        Outcome::Stopped {
            reason: Some(Reason::from("user interrupted")),
        },
        Outcome::Failed {
            error: Arc::new("overloaded".to_string()),
        },
        Outcome::Panicked {
            message: Some(Arc::from("boom")),
        },
        Outcome::Lost,
    ];
    for outcome in outcomes {
        let state = State::Idle {
            last: Some(outcome),
            progress: None,
        };
        assert_eq!(round_trip(&state), state);
    }
    let idle = State::Idle {
        last: None,
        progress: None,
    };
    assert_eq!(round_trip(&idle), idle);
}

#[test]
fn a_reason_is_a_plain_string() {
    let json = serde_json::to_string(&Reason::from("deploy")).expect("serializes");
    assert_eq!(json, "\"deploy\"");
}
