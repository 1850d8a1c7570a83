//! A repository handle or an abort controller may live in a thread-local, and so be dropped while
//! the thread's thread-locals are being destroyed. Whatever the repository does then (stop every
//! run, end every stream, run abort callbacks) must not touch a thread-local that is already gone:
//! a panic in a thread-local's destructor aborts the whole process. These tests live in a binary
//! of their own for that reason: on failure the process aborts.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::Manual;
use futures::executor::LocalPool;
use futures::stream;
use keyrunner_task_runner_repository::{
    AbortController, EventStream, Outcome, TaskRunnerRepository,
};

type Repo = TaskRunnerRepository<u32, u32>;

thread_local! {
    /// The thread's own handle on a repository: the last one, so its drop shuts it down.
    static HELD: RefCell<Option<Repo>> = const { RefCell::new(None) };
}

/// Runs abort callbacks on this thread once, so that the crate's own thread-local is in use.
fn fire_a_callback_here() {
    let controller = AbortController::new();
    controller.signal().on_abort(|_| {}).detach();
    controller.abort(None);
}

/// Hands the repository's last handle to a thread that keeps it in a thread-local and exits;
/// `callbacks_first` says whether the crate's thread-local comes into use before or after the
/// handle's (destruction order follows that order on some platforms, the reverse on others).
fn dropped_at_thread_exit(repo: Repo, callbacks_first: bool) {
    thread::spawn(move || {
        if callbacks_first {
            fire_a_callback_here();
        }
        HELD.with(|held| *held.borrow_mut() = Some(repo));
        if !callbacks_first {
            fire_a_callback_here();
        }
    })
    .join()
    .unwrap();
}

/// The last handle is dropped at thread exit while a run, linked to another signal, and a
/// stream are alive: the implicit shutdown stops the run (firing its signal) and ends the
/// stream (a callback on the shutdown signal). Either order of destruction must work.
#[test]
fn dropping_the_last_handle_from_a_thread_local_destructor_shuts_down_cleanly() {
    for callbacks_first in [false, true] {
        let manual = Manual::default();
        let mut pool = LocalPool::new();
        let repo: Repo = manual.repository();
        let mut events: EventStream<u32> = repo.stream(1);
        let handle = repo.run(1, |_| stream::pending::<u32>()).unwrap();
        let called = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&called);
        handle
            .abort_signal()
            .on_abort(move |_| flag.store(true, Ordering::SeqCst))
            .detach();
        manual.drive(&mut pool);

        dropped_at_thread_exit(repo, callbacks_first);
        assert!(
            called.load(Ordering::SeqCst),
            "the run's callback never ran"
        );
        manual.drive(&mut pool);
        assert!(handle.outcome().unwrap().is_stopped());
        let seen: Vec<_> = futures::executor::block_on_stream(&mut events).collect();
        assert_eq!(
            seen.last()
                .and_then(|event| event.state())
                .and_then(|state| state.last_outcome()),
            Some(&Outcome::Stopped { reason: None }),
            "the stream did not end with the key's final state"
        );
    }
}
