//! The abort signal: fires once, callbacks (late ones run at once), a future, cheap clones.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll};
use std::thread;

use common::CountingWaker;
use keyrunner_task_runner_repository::{AbortController, Reason};

#[test]
fn fires_once_and_keeps_the_first_reason() {
    let controller = AbortController::new();
    assert!(controller.abort(Some(Reason::from("first"))));
    assert!(!controller.abort(Some(Reason::from("second"))));
    assert_eq!(controller.signal().reason(), Some(Reason::from("first")));
}

#[test]
fn callbacks_run_once_with_the_reason_and_late_ones_run_at_once() {
    let controller = AbortController::new();
    let signal = controller.signal();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    signal
        .on_abort(move |reason| sink.lock().unwrap().push(reason.cloned()))
        .detach();
    controller.abort(Some(Reason::from("why")));
    controller.abort(None);
    assert_eq!(*seen.lock().unwrap(), [Some(Reason::from("why"))]);

    let late = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&late);
    let guard = signal.on_abort(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(late.load(Ordering::SeqCst), 1, "ran during on_abort");
    drop(guard);
    assert_eq!(late.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_the_guard_removes_a_pending_callback() {
    let controller = AbortController::new();
    let called = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&called);
    let guard = controller.signal().on_abort(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    drop(guard);
    controller.abort(None);
    assert_eq!(called.load(Ordering::SeqCst), 0);
}

#[test]
fn the_future_is_pending_then_woken_then_ready() {
    let controller = AbortController::new();
    let signal = controller.signal();
    let mut aborted = signal.aborted();
    let (counter, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    assert!(std::pin::Pin::new(&mut aborted).poll(&mut cx).is_pending());
    controller.abort(None);
    assert_eq!(counter.count(), 1, "woken by abort");
    assert_eq!(
        std::pin::Pin::new(&mut aborted).poll(&mut cx),
        Poll::Ready(())
    );
    // A future made after the abort is ready at once.
    futures::executor::block_on(signal.aborted());
}

#[test]
fn clones_share_one_signal() {
    let controller = AbortController::new();
    let a = controller.signal();
    let b = a.clone();
    assert!(a.same_signal(&b));
    assert!(!a.same_signal(&AbortController::new().signal()));
    controller.abort(None);
    assert!(a.is_aborted() && b.is_aborted());
}

#[test]
fn a_panicking_callback_does_not_stop_the_others_and_resurfaces_from_abort() {
    let controller = AbortController::new();
    let signal = controller.signal();
    signal.on_abort(|_| panic!("callback")).detach();
    let called = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&called);
    signal
        .on_abort(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .detach();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| controller.abort(None)));
    assert!(result.is_err());
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert!(signal.is_aborted());
}

#[test]
fn racing_aborts_fire_callbacks_exactly_once() {
    for _ in 0..500 {
        let controller = AbortController::new();
        let called = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&called);
        controller
            .signal()
            .on_abort(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .detach();
        let barrier = Barrier::new(3);
        let wins = AtomicUsize::new(0);
        thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    barrier.wait();
                    if controller.abort(None) {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            // A registration racing the aborts runs exactly once too.
            scope.spawn(|| {
                barrier.wait();
                let counter = Arc::clone(&called);
                controller
                    .signal()
                    .on_abort(move |_| {
                        counter.fetch_add(1, Ordering::SeqCst);
                    })
                    .detach();
            });
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1);
        assert_eq!(called.load(Ordering::SeqCst), 2);
    }
}

#[test]
fn awaiting_racing_a_fire_is_always_woken() {
    // The waiter listens while the signal fires on another thread: a wake-up lost between the
    // waiter's check and its registration would leave it blocked, caught by the timeout.
    for _ in 0..2_000 {
        let controller = AbortController::new();
        let signal = controller.signal();
        let start = Arc::new(Barrier::new(2));
        let (done, finished) = std::sync::mpsc::channel();
        let waiter_start = Arc::clone(&start);
        let waiter = thread::spawn(move || {
            waiter_start.wait();
            futures::executor::block_on(signal.aborted());
            let _ = done.send(());
        });
        start.wait();
        controller.abort(None);
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the waiter was woken");
        waiter.join().expect("the waiter does not panic");
    }
}
