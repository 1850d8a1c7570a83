//! The wire format (feature `serde`): one tagging style for every type, with the default type
//! parameters, exactly as `docs/wire-format.md` documents it, and round trips.
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use keyrunner_task_runner_repository::{Event, NoError, Outcome, Position, Reason, RunId, State};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `value` as JSON is `json`, and `json` reads back as `value`.
fn wire<T>(value: &T, json: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).unwrap(), json);
    assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
}

#[test]
fn states_with_the_default_error_type() {
    // `State<String>` is `State<String, NoError>`: no error type to name, and it serializes.
    let never: State<String> = State::default();
    wire(&never, r#"{"type":"idle","last":null,"progress":null}"#);

    let running: State<String> = State::Running {
        run: RunId::new(7),
        progress: Some(Arc::new("Hel".to_owned())),
    };
    wire(&running, r#"{"type":"running","run":7,"progress":"Hel"}"#);

    let stopped: State<String> = State::Idle {
        last: Some(Outcome::Stopped {
            reason: Some(Reason::from("user")),
        }),
        progress: Some(Arc::new("Hello".to_owned())),
    };
    wire(
        &stopped,
        r#"{"type":"idle","last":{"type":"stopped","reason":"user"},"progress":"Hello"}"#,
    );
}

#[test]
fn every_outcome() {
    wire(&Outcome::<NoError>::Completed, r#"{"type":"completed"}"#);
    wire(
        &Outcome::<NoError>::Stopped { reason: None },
        r#"{"type":"stopped","reason":null}"#,
    );
    wire(
        &Outcome::<String>::Failed {
            error: Arc::new("overloaded".to_owned()),
        },
        r#"{"type":"failed","error":"overloaded"}"#,
    );
    wire(
        &Outcome::<NoError>::Panicked {
            message: Some(Arc::from("boom")),
        },
        r#"{"type":"panicked","message":"boom"}"#,
    );
    wire(&Outcome::<NoError>::Lost, r#"{"type":"lost"}"#);
}

#[test]
fn events_and_positions() {
    let start: Event<String> = Event::State {
        position: Position::new(Some(RunId::new(7)), 0),
        state: State::Running {
            run: RunId::new(7),
            progress: None,
        },
    };
    wire(
        &start,
        r#"{"type":"state","position":"7.0","state":{"type":"running","run":7,"progress":null}}"#,
    );
    let delta: Event<String> = Event::Delta {
        position: Position::new(Some(RunId::new(7)), 1),
        delta: Arc::new("Hel".to_owned()),
    };
    wire(&delta, r#"{"type":"delta","position":"7.1","delta":"Hel"}"#);
    wire(&Position::default(), r#""0.0""#);
    assert!(serde_json::from_str::<Position>(r#""7""#).is_err());
    assert!(serde_json::from_str::<Position>(r#""7.x""#).is_err());
}

#[test]
fn no_error_has_no_values() {
    assert!(serde_json::from_str::<NoError>(r#""anything""#).is_err());
    assert!(serde_json::from_str::<Outcome>(r#"{"type":"failed","error":"x"}"#).is_err());
}
