//! Faults stay contained: panics, refusing spawners, listeners that call back in, shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Alive, Manual, on_state, recorder};
use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::stream::{self, StreamExt};
use keyrunner_task_runner_repository::{
    AbortController, Conflict, Outcome, Reason, RunError, State, StateNode, TaskRunnerRepository,
    spawn_fn,
};

type Repo = TaskRunnerRepository<u32, u32, String>;

fn panic_message(outcome: Option<Outcome<String>>) -> Option<String> {
    match outcome {
        Some(Outcome::Panicked { message }) => message.map(|m| m.to_string()),
        other => panic!("expected a panic outcome, got {other:?}"),
    }
}

#[test]
fn a_panicking_task_function_is_recorded_and_the_key_returns_to_idle() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let other = repo.run(2, |_| stream::pending::<u32>()).unwrap();
    let handle = repo
        .run(1, |_| -> stream::Empty<u32> { panic!("task function") })
        .unwrap();
    manual.drive(&mut pool);
    assert_eq!(
        panic_message(handle.outcome()).as_deref(),
        Some("task function")
    );
    assert!(repo.state(&1).is_idle());
    assert!(repo.is_running(&2), "other keys are unaffected");
    assert!(!other.is_finished());
    // The key is usable again.
    let again = repo.run(1, |_| stream::iter([5])).unwrap();
    manual.drive(&mut pool);
    assert_eq!(again.outcome(), Some(Outcome::Completed));
}

#[test]
fn a_panicking_stream_is_recorded_and_dropped() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let alive = Alive::default();
    let tracked = alive.clone();
    let handle = repo
        .run(1, move |_| {
            tracked.track(
                stream::iter([1u32, 2])
                    .map(|n| if n == 2 { panic!("item {n}") } else { n })
                    .boxed(),
            )
        })
        .unwrap();
    manual.drive(&mut pool);
    assert_eq!(panic_message(handle.outcome()).as_deref(), Some("item 2"));
    assert_eq!(alive.count(), 0);
    drop(handle);
    assert!(repo.is_empty());
}

#[test]
fn a_spawner_that_refuses_leaves_the_key_idle_with_a_typed_error() {
    let repo: Repo = TaskRunnerRepository::new(spawn_fn(drop));
    let (seen, listener) = recorder();
    let _subscription = repo.listen(1, listener, false);
    let error = repo.run(1, |_| stream::iter([1])).unwrap_err();
    assert!(error.is_spawn(), "{error:?}");
    assert!(error.to_string().contains("without running it"));
    assert_eq!(
        repo.state(&1),
        State::Idle {
            last: Some(Outcome::Lost),
            progress: None
        }
    );
    let seen = seen.lock().unwrap();
    assert!(matches!(
        seen[..],
        [
            State::Running { .. },
            State::Idle {
                last: Some(Outcome::Lost),
                progress: None
            }
        ]
    ));
}

#[test]
fn a_driver_dropped_mid_run_by_its_executor_ends_as_lost() {
    let manual = Manual::default();
    let repo: Repo = manual.repository();
    let handle = repo.run(1, |_| stream::pending::<u32>()).unwrap();
    {
        let mut pool = LocalPool::new();
        manual.drive(&mut pool);
        assert!(repo.is_running(&1));
        // The pool (the "runtime") goes away with the driver still pending.
    }
    assert_eq!(handle.outcome(), Some(Outcome::Lost));
    drop(handle);
    assert!(repo.is_empty());
}

#[test]
fn listeners_may_read_run_and_stop_from_inside_their_callback() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let inside = repo.clone();
    let restarted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&restarted);
    let _subscription = repo.listen(
        1,
        on_state(move |state: &State<u32, String>| {
            let _ = inside.state(&1);
            let _ = inside.running_keys();
            match inside.state_node(1) {
                // Restart once after the first completion.
                StateNode::Idle(idle)
                    if state.last_outcome().is_some()
                        && counter.fetch_add(1, Ordering::SeqCst) == 0 =>
                {
                    idle.run(|_| stream::pending::<u32>()).unwrap().detach();
                }
                // Stop the run as soon as it yields.
                StateNode::Running(running) if state.progress() == Some(&1) => {
                    let _ = running.stop(Reason::from("from a listener"));
                }
                _ => {}
            }
            let _nested = inside.listen(2, |_| {}, true);
        }),
        true,
    );
    repo.run(1, |_| stream::iter([1, 2, 3])).unwrap().detach();
    manual.drive(&mut pool);
    assert_eq!(
        restarted.load(Ordering::SeqCst),
        1,
        "stopped at item 1, then restarted"
    );
    assert!(repo.is_running(&1), "the restarted run is pending");
    let shutdown = repo.shutdown(None);
    manual.drive(&mut pool);
    futures::executor::block_on(shutdown);
    assert_eq!(
        restarted.load(Ordering::SeqCst),
        2,
        "the shutdown's idle was seen too"
    );
    assert!(!repo.is_running(&1));
}

#[test]
fn a_panicking_listener_does_not_stop_the_run_or_other_listeners() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (seen, listener) = recorder();
    let _bad = repo.listen(
        1,
        on_state(|state: &State<u32, String>| {
            if state.progress() == Some(&1) {
                panic!("listener");
            }
        }),
        false,
    );
    let _good = repo.listen(1, listener, false);
    let handle = repo.run(1, |_| stream::iter([1, 2])).unwrap();
    // The listener's panic resurfaces from the executor's poll of the driver.
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        manual.drive(&mut pool);
    }));
    assert!(polled.is_err(), "the listener's panic is not swallowed");
    // The driver was mid-poll when the panic surfaced; it is gone with the pool's task.
    drop(pool);
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|s| s.progress() == Some(&1)),
        "others still got it: {seen:?}"
    );
    let outcome = handle.outcome();
    assert!(
        outcome.is_some(),
        "the run still ended with one outcome: {outcome:?}"
    );
    assert!(repo.state(&1).is_idle());
}

#[test]
fn shutdown_stops_everything_waits_for_streams_and_refuses_later_runs() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let alive = Alive::default();
    let handles: Vec<_> = (0..10)
        .map(|key| {
            let tracked = alive.clone();
            repo.run(key, move |_| tracked.track(stream::pending::<u32>()))
                .unwrap()
        })
        .collect();
    manual.drive(&mut pool);
    assert_eq!(alive.count(), 10);
    assert_eq!(repo.live_tasks(), 10);

    let mut shutdown = repo.shutdown(Reason::from("deploy"));
    assert!(repo.is_shut_down());
    assert!(repo.running_keys().is_empty(), "idle at once");
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(
        std::pin::Pin::new(&mut shutdown).poll(&mut cx).is_pending(),
        "streams not dropped yet"
    );
    manual.drive(&mut pool);
    assert!(std::pin::Pin::new(&mut shutdown).poll(&mut cx).is_ready());
    assert_eq!(alive.count(), 0);
    for handle in handles {
        assert_eq!(
            handle.outcome(),
            Some(Outcome::Stopped {
                reason: Some(Reason::from("deploy"))
            })
        );
    }
    let refused = repo.run(1, |_| stream::iter([1])).unwrap_err();
    assert!(refused.is_shut_down());
    assert!(refused.into_task().is_some(), "the task is handed back");
    assert!(repo.is_empty());
}

#[test]
fn one_linked_controller_stops_many_runs_and_a_run_end_never_aborts_it() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let controller = AbortController::new();
    let signal = controller.signal();

    // A run that ends by itself does not fire the caller's controller.
    let StateNode::Idle(idle) = repo.state_node(0) else {
        panic!("idle")
    };
    let done = idle.run_linked(|_| stream::iter([1]), &signal).unwrap();
    manual.drive(&mut pool);
    assert_eq!(done.outcome(), Some(Outcome::Completed));
    assert!(!controller.is_aborted());

    let handles: Vec<_> = (1..4)
        .map(|key| {
            let StateNode::Idle(idle) = repo.state_node(key) else {
                panic!("idle")
            };
            idle.run_linked(|_| stream::pending::<u32>(), &signal)
                .unwrap()
        })
        .collect();
    manual.drive(&mut pool);
    controller.abort(Some(Reason::from("cancel all")));
    assert!(repo.running_keys().is_empty());
    manual.drive(&mut pool);
    for handle in handles {
        assert_eq!(
            handle.outcome(),
            Some(Outcome::Stopped {
                reason: Some(Reason::from("cancel all"))
            })
        );
    }
}

#[test]
fn a_run_linked_to_an_already_aborted_signal_is_stopped_at_once() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let controller = AbortController::new();
    controller.abort(None);
    let StateNode::Idle(idle) = repo.state_node(1) else {
        panic!("idle")
    };
    let handle = idle
        .run_linked(|_| stream::pending::<u32>(), &controller.signal())
        .unwrap();
    assert!(repo.state(&1).is_idle());
    manual.drive(&mut pool);
    assert_eq!(handle.outcome(), Some(Outcome::Stopped { reason: None }));
}

#[test]
fn conflict_policies() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let first = repo.run(1, |_| stream::pending::<u32>()).unwrap();

    let rejected = repo.run_with(1, Conflict::Reject, |_| stream::pending::<u32>());
    match rejected {
        Err(RunError::Busy { running, .. }) => assert_eq!(running, first.run_id()),
        other => panic!("expected Busy, got {other:?}"),
    }
    let existing = repo
        .run_with(1, Conflict::UseExisting, |_| stream::pending::<u32>())
        .unwrap();
    assert_eq!(existing.run_id(), first.run_id());

    let (tx, rx) = mpsc::unbounded();
    let replaced = repo.run_with(1, Conflict::Replace, move |_| rx).unwrap();
    assert_ne!(replaced.run_id(), first.run_id());
    assert_eq!(repo.state(&1).run_id(), Some(replaced.run_id()));
    manual.drive(&mut pool);
    assert_eq!(
        first.outcome(),
        Some(Outcome::Stopped {
            reason: Some(Reason::superseded())
        })
    );
    tx.unbounded_send(4).unwrap();
    drop(tx);
    manual.drive(&mut pool);
    assert_eq!(replaced.outcome(), Some(Outcome::Completed));
}

#[test]
fn churning_many_keys_through_run_and_complete_leaves_nothing_allocated() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: TaskRunnerRepository<u64, u64> = manual.repository();
    for batch in 0..100u64 {
        for key in batch * 1_000..(batch + 1) * 1_000 {
            repo.run(key, move |_| stream::iter([key]))
                .unwrap()
                .detach();
        }
        manual.drive(&mut pool);
    }
    assert_eq!(repo.live_tasks(), 0);
    assert!(repo.is_empty(), "{} keys left", repo.len());
}

#[test]
fn observers_read_and_listen() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let observer = repo.observer();
    let controller = repo.controller();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let _subscription = observer.listen(
        1,
        on_state(move |state: &State<u32, String>| sink.lock().unwrap().push(state.is_running())),
        true,
    );
    controller.run(1, |_| stream::iter([1])).unwrap().detach();
    assert!(observer.is_running(&1));
    assert_eq!(observer.running_keys(), vec![1]);
    manual.drive(&mut pool);
    assert_eq!(*seen.lock().unwrap(), [false, true, true, false]);
}
