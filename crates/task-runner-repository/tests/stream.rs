//! `stream(key)`: the current state first, then every transition in order, bounded.

mod common;

use common::Manual;
use futures::channel::mpsc;
use futures::executor::LocalPool;
use std::convert::Infallible;

use futures::FutureExt;
use futures::stream::{self, StreamExt};
use keyrunner_task_runner_repository::{
    Outcome, STREAM_CAPACITY, State, StateStream, TaskRunnerRepository,
};

type Repo = TaskRunnerRepository<u32, u32>;

fn drain(states: &mut StateStream<u32, Infallible>) -> Vec<State<u32>> {
    let mut out = Vec::new();
    while let Some(Some(state)) = states.next().now_or_never() {
        out.push(state);
    }
    out
}

#[test]
fn a_slow_consumer_sees_every_kind_of_transition_with_the_latest_progress() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let mut states = repo.stream(1);
    let handle = repo.run(1, |_| stream::iter(1..=100)).unwrap();
    let run = handle.run_id();
    manual.drive(&mut pool);
    assert_eq!(
        drain(&mut states),
        [
            State::Idle { last: None },
            State::Running {
                run,
                progress: None
            },
            State::Running {
                run,
                progress: Some(100)
            },
            State::Idle {
                last: Some(Outcome::Completed)
            },
        ]
    );
}

#[test]
fn a_fast_consumer_sees_every_item() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let mut states = repo.stream(1);
    let (tx, rx) = mpsc::unbounded();
    let handle = repo.run(1, move |_| rx).unwrap();
    let run = handle.run_id();
    let mut seen = drain(&mut states);
    for item in 1..=3 {
        tx.unbounded_send(item).unwrap();
        manual.drive(&mut pool);
        seen.extend(drain(&mut states));
    }
    drop(tx);
    manual.drive(&mut pool);
    seen.extend(drain(&mut states));
    assert_eq!(
        seen,
        [
            State::Idle { last: None },
            State::Running {
                run,
                progress: None
            },
            State::Running {
                run,
                progress: Some(1)
            },
            State::Running {
                run,
                progress: Some(2)
            },
            State::Running {
                run,
                progress: Some(3)
            },
            State::Idle {
                last: Some(Outcome::Completed)
            },
        ]
    );
}

#[test]
fn a_stream_that_is_never_polled_holds_at_most_its_capacity() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let mut states = repo.stream(1);
    for _ in 0..STREAM_CAPACITY {
        repo.run(1, |_| stream::iter([1])).unwrap().detach();
        manual.drive(&mut pool);
    }
    let seen = drain(&mut states);
    assert_eq!(seen.len(), STREAM_CAPACITY);
    assert_eq!(
        seen.last(),
        Some(&State::Idle {
            last: Some(Outcome::Completed)
        }),
        "the newest transitions are kept"
    );
}

#[test]
fn the_stream_keeps_the_key_remembered_until_dropped() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let states = repo.stream(1);
    repo.run(1, |_| stream::iter([1])).unwrap().detach();
    manual.drive(&mut pool);
    assert_eq!(repo.state(&1).last_outcome(), Some(&Outcome::Completed));
    drop(states);
    assert!(repo.is_empty());
}
