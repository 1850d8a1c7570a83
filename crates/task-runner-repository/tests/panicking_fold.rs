//! A progress type's own code — `Accumulate::accumulate` and `Clone` — may panic. When the
//! repository folds for the run itself (at the run's end here), that panic is the task's: the
//! run ends as `Panicked` (not `Completed`), the panic goes no further than the outcome, and
//! nobody folds that run's progress again, so no stream stays stuck on it.
#![allow(clippy::unwrap_used)]

mod common;

use std::panic::{self, AssertUnwindSafe};

use common::Manual;
use futures::FutureExt;
use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::stream::{self, StreamExt};
use keyrunner_task_runner_repository::{
    Accumulate, Delta, Event, Outcome, Reason, State, TaskRunnerRepository,
};

/// A counter that cannot take the delta 13.
#[derive(Clone, Debug, PartialEq)]
struct Brittle(u32);

impl Accumulate for Brittle {
    fn accumulate(&mut self, delta: &Self) {
        assert!(delta.0 != 13, "unlucky delta");
        self.0 += delta.0;
    }
}

type Repo = TaskRunnerRepository<u32, Brittle>;

fn unlucky() -> Outcome {
    Outcome::Panicked {
        message: Some("unlucky delta".into()),
    }
}

/// A run whose deltas cannot be folded completes its stream; folding its final progress
/// panics. The run must end `Panicked` — not `Completed` with no progress — and the panic must
/// not escape to the executor.
#[test]
fn a_run_whose_final_fold_panics_ends_panicked_and_the_panic_stays_in_the_outcome() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let _keep = repo.listen(1, |_| {}, false);
    let handle = repo
        .run(1, |_| stream::iter([1, 13, 2].map(|n| Delta(Brittle(n)))))
        .unwrap();
    let driven = panic::catch_unwind(AssertUnwindSafe(|| manual.drive(&mut pool)));
    assert!(driven.is_ok(), "the fold's panic escaped to the executor");
    assert_eq!(handle.outcome(), Some(unlucky()));
    assert_eq!(
        repo.state(&1),
        State::Idle {
            last: Some(unlucky()),
            progress: None
        }
    );
}

/// Stopping such a run records `Stopped` (the stop came first) and does not panic the stopper.
#[test]
fn stopping_a_run_whose_fold_panics_does_not_panic_the_stopper() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (tx, rx) = mpsc::unbounded::<u32>();
    let handle = repo.run(1, move |_| rx.map(|n| Delta(Brittle(n)))).unwrap();
    tx.unbounded_send(1).unwrap();
    tx.unbounded_send(13).unwrap();
    manual.drive(&mut pool);
    let stopped = panic::catch_unwind(AssertUnwindSafe(|| repo.stop(&1, Reason::from("late"))));
    assert!(stopped.is_ok(), "the fold's panic escaped from `stop`");
    manual.drive(&mut pool);
    assert_eq!(
        handle.outcome(),
        Some(Outcome::Stopped {
            reason: Some(Reason::from("late"))
        })
    );
}

/// A stream opened while such a run goes on needs the accumulated progress (a resync). Once the
/// run has ended, polling it must not panic again and again: it yields the run's progress as it
/// ended and then its end.
#[test]
fn a_stream_behind_a_run_whose_fold_panics_reaches_its_end() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (tx, rx) = mpsc::unbounded::<u32>();
    let handle = repo.run(1, move |_| rx.map(|n| Delta(Brittle(n)))).unwrap();
    tx.unbounded_send(1).unwrap();
    tx.unbounded_send(13).unwrap();
    manual.drive(&mut pool);
    let mut events = repo.stream(1);
    tx.unbounded_send(2).unwrap();
    drop(tx);
    let _ = panic::catch_unwind(AssertUnwindSafe(|| manual.drive(&mut pool)));
    assert!(handle.is_finished());

    let mut seen = Vec::new();
    for _ in 0..10 {
        let polled = panic::catch_unwind(AssertUnwindSafe(|| events.next().now_or_never()));
        match polled {
            Ok(Some(Some(event))) => seen.push(event),
            Ok(_) => break,
            Err(_) => panic!("the stream panics on every poll; it got {seen:?}"),
        }
    }
    let end = seen.last().and_then(Event::state);
    assert_eq!(
        end.and_then(State::last_outcome),
        Some(&unlucky()),
        "{seen:?}"
    );
}
