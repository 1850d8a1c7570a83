//! Regression tests, one per defect an independent probe found; each is named for its bug.
#![allow(clippy::unwrap_used)]

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::thread;

use common::{Manual, finishes, on_state, poll_once};
use futures::executor::LocalPool;
use futures::stream;
use keyrunner_task_runner_repository::{
    AbortController, Conflict, Driver, Outcome, Reason, RunError, RunHandle, State, StateNode,
    TaskRunnerRepository, spawn_fn,
};

/// A start that unwinds — here because the run is linked to an already-aborted signal, so it is
/// stopped at once, and a listener panics on that stop — must leave no live count behind:
/// otherwise `shutdown` waits forever for a driver that never existed.
#[test]
fn shutdown_does_not_hang_after_a_linked_start_unwinds() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: TaskRunnerRepository<u32, u32> = manual.repository();
    let _panicky = repo.listen(
        1,
        on_state(|state: &State<u32>| assert!(!state.is_idle(), "listener sees idle")),
        false,
    );
    let controller = AbortController::new();
    controller.abort(Some(Reason::from("gone")));

    let started = panic::catch_unwind(AssertUnwindSafe(|| match repo.state_node(1) {
        StateNode::Idle(idle) => idle
            .run_linked(|_| stream::pending::<u32>(), &controller.signal())
            .map(RunHandle::detach),
        StateNode::Running(_) => unreachable!("nothing ran key 1"),
    }));
    assert!(started.is_err(), "the listener's panic resurfaces");
    manual.drive(&mut pool);
    assert_eq!(repo.live_tasks(), 0, "the unwound start is still counted");
    assert!(
        poll_once(&mut Box::pin(repo.shutdown(None))),
        "shutdown waits forever"
    );
}

/// A value whose destructor reads the repository it belongs to.
struct ReadsOnDrop {
    repo: Arc<OnceLock<TaskRunnerRepository<u32, ReadsOnDrop, ReadsOnDrop>>>,
}

impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        if let Some(repo) = self.repo.get() {
            let _ = repo.is_running(&1);
        }
    }
}

impl std::fmt::Debug for ReadsOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadsOnDrop")
    }
}

/// A stream that stops its own run, then yields `item`: the item loses to that stop.
fn stops_itself_then_yields<T: Send + 'static>(
    repo: Arc<OnceLock<TaskRunnerRepository<u32, ReadsOnDrop, ReadsOnDrop>>>,
    item: T,
) -> impl futures::Stream<Item = T> + Send + 'static {
    let mut item = Some(item);
    stream::poll_fn(move |_| {
        if let StateNode::Running(running) = repo.get().unwrap().state_node(1) {
            running.stop(Reason::from("stopped first")).unwrap();
        }
        std::task::Poll::Ready(item.take())
    })
}

/// A progress item that loses to a stop is discarded; its destructor (user code) must not run
/// under the key's lock, or a destructor that reads the repository deadlocks.
#[test]
fn a_discarded_progress_item_is_dropped_outside_the_keys_lock() {
    assert!(
        finishes(|| {
            let manual = Manual::default();
            let mut pool = LocalPool::new();
            let cell = Arc::new(OnceLock::new());
            let repo = cell.get_or_init(|| manual.repository());
            let item = ReadsOnDrop {
                repo: Arc::clone(&cell),
            };
            let source = Arc::clone(&cell);
            let handle = repo
                .run(1, move |_| stops_itself_then_yields(source, item))
                .unwrap();
            manual.drive(&mut pool);
            assert!(handle.outcome().unwrap().is_stopped());
        }),
        "dropping the discarded item deadlocked on the key's lock"
    );
}

/// The same for a task's error that loses to a stop: `Failed` is discarded, and the error's
/// destructor must not run under the key's lock.
#[test]
fn a_discarded_error_is_dropped_outside_the_keys_lock() {
    assert!(
        finishes(|| {
            let manual = Manual::default();
            let mut pool = LocalPool::new();
            let cell = Arc::new(OnceLock::new());
            let repo = cell.get_or_init(|| manual.repository());
            let error = ReadsOnDrop {
                repo: Arc::clone(&cell),
            };
            let source = Arc::clone(&cell);
            let handle = repo
                .run(1, move |_| {
                    stops_itself_then_yields(source, Err::<ReadsOnDrop, _>(error))
                })
                .unwrap();
            manual.drive(&mut pool);
            assert!(handle.outcome().unwrap().is_stopped());
        }),
        "dropping the discarded error deadlocked on the key's lock"
    );
}

/// Aborting the head of a chain of linked runs (each run linked to the previous run's signal)
/// stops the whole chain without recursing once per link: on a small stack, a recursive abort
/// overflows long before 5,000 links.
#[test]
fn aborting_a_deep_chain_of_linked_runs_does_not_overflow_the_stack() {
    const LINKS: u32 = 5_000;
    let manual = Manual::default();
    let repo: TaskRunnerRepository<u32, u32> = manual.repository();
    let mut handles = vec![repo.run(0, |_| stream::pending::<u32>()).unwrap()];
    for key in 1..LINKS {
        let previous = handles.last().unwrap().abort_signal();
        let handle = match repo.state_node(key) {
            StateNode::Idle(idle) => idle
                .run_linked(|_| stream::pending::<u32>(), &previous)
                .unwrap(),
            StateNode::Running(_) => unreachable!("each key runs once"),
        };
        handles.push(handle);
    }
    let head = handles[0].abort_signal();
    let aborted = thread::Builder::new()
        // Small enough that a frame or two per link overflows; plenty for an iterative abort.
        .stack_size(256 * 1024)
        .spawn(move || {
            head.on_abort(|_| {}).detach();
            if let StateNode::Running(running) = repo.state_node(0) {
                running.stop(Reason::from("head")).unwrap();
            }
            repo
        })
        .unwrap()
        .join();
    let repo = aborted.expect("the abort overflowed its thread's stack");
    for key in 0..LINKS {
        assert!(repo.state(&key).is_idle(), "link {key} is still running");
    }
}

/// `run_with(Replace)` stops the old run and then starts the new task. If stopping the old one
/// panics (a listener or an abort callback), the replacement must still start, and the panic
/// resumes afterwards — as a plain `run` would have started.
#[test]
fn replace_still_starts_the_new_task_when_stopping_the_old_one_panics() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: TaskRunnerRepository<u32, u32> = manual.repository();
    let old = repo.run(1, |_| stream::pending::<u32>()).unwrap();
    manual.drive(&mut pool);
    old.abort_signal()
        .on_abort(|_| panic!("abort callback panics"))
        .detach();

    let replaced = panic::catch_unwind(AssertUnwindSafe(|| {
        repo.run_with(1, Conflict::Replace, |_| stream::pending::<u32>())
            .map(RunHandle::detach)
    }));
    assert!(replaced.is_err(), "the callback's panic resurfaces");
    let state = repo.state(&1);
    assert!(
        state.is_running() && state.run_id() != Some(old.run_id()),
        "the new task was abandoned: {state:?}"
    );
    manual.drive(&mut pool);
    assert_eq!(
        old.outcome(),
        Some(Outcome::Stopped {
            reason: Some(Reason::superseded())
        })
    );
}

/// A callback registered on a run's own signal and detached — here holding the run's handle —
/// must be dropped when the run ends (its signal can no longer fire); otherwise the handle it
/// holds keeps the key remembered forever.
#[test]
fn a_runs_abort_callbacks_are_dropped_when_it_ends() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: TaskRunnerRepository<u32, u32> = manual.repository();
    for key in 0..1_000 {
        let handle = repo.run(key, |_| stream::iter([1])).unwrap();
        let kept = handle.clone();
        handle.abort_signal().on_abort(move |_| drop(kept)).detach();
    }
    manual.drive(&mut pool);
    assert_eq!(
        repo.len(),
        0,
        "completed runs are remembered by their callbacks"
    );
}

/// A spawner that refuses a run makes `run` return `RunError::Spawn`; the key's outcome is
/// `Lost` — unless the run was stopped before the spawner refused it (a linked signal that had
/// already fired), in which case it is `Stopped`, as the docs say.
#[test]
fn a_refused_run_ends_lost_unless_it_was_stopped_first() {
    let refusing = |driver: Driver| drop(driver);
    let repo: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(refusing));
    let _watch = repo.listen(1, |_| {}, false);
    let _watch_2 = repo.listen(2, |_| {}, false);

    let refused = repo.run(1, |_| stream::pending::<u32>());
    assert!(matches!(refused, Err(RunError::Spawn { .. })));
    assert_eq!(repo.state(&1).last_outcome(), Some(&Outcome::Lost));

    let controller = AbortController::new();
    controller.abort(Some(Reason::from("before")));
    let refused = match repo.state_node(2) {
        StateNode::Idle(idle) => {
            idle.run_linked(|_| stream::pending::<u32>(), &controller.signal())
        }
        StateNode::Running(_) => unreachable!("nothing ran key 2"),
    };
    assert!(matches!(refused, Err(RunError::Spawn { .. })));
    assert_eq!(
        repo.state(&2).last_outcome(),
        Some(&Outcome::Stopped {
            reason: Some(Reason::from("before"))
        })
    );
}
