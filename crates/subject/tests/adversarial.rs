//! Adversarial checks of the delivery role: odd panic payloads, removal racing delivery, and
//! `immediate` listeners racing emitters.
#![allow(clippy::unwrap_used)]

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use keyrunner_subject::Subject;

/// What one listener saw.
type Log = Arc<Mutex<Vec<(u32, u32)>>>;

/// A panic payload whose destructor panics (when not already unwinding).
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("a panic payload panicked when dropped");
        }
    }
}

/// Two listener panics in one drain: the first payload is kept, the second is dropped — and
/// its destructor panics. The delivery role must still be released: otherwise every later
/// value is queued for a drainer that is gone, no listener hears anything again, and an
/// `unsubscribe` from another thread waits forever.
#[test]
fn a_panic_payload_that_panics_when_dropped_does_not_wedge_the_subject() {
    let subject = Subject::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (inner, sink) = (subject.clone(), Arc::clone(&seen));
    let _subscription = subject.listen(
        move |value: &u32| {
            sink.lock().unwrap().push(*value);
            match *value {
                1 => {
                    inner.next(2);
                    panic!("first");
                }
                2 => panic::panic_any(Bomb),
                _ => {}
            }
        },
        false,
    );
    let result = panic::catch_unwind(AssertUnwindSafe(|| subject.next(1)));
    assert!(result.is_err());
    subject.next(3);
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2, 3],
        "value 3 was queued for a drainer that is gone: {subject:?}"
    );
}

/// A listener is removed from another thread while values are being delivered: once
/// `unsubscribe` returns, the listener is never called again.
#[test]
fn unsubscribe_racing_delivery_gets_nothing_after_it_returns() {
    let subject = Subject::new();
    let barrier = Barrier::new(2);
    for _ in 0..500 {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let subscription = subject.listen(
            move |_: &u32| {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            false,
        );
        thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                for value in 0..50 {
                    subject.next(value);
                }
            });
            barrier.wait();
            subscription.unsubscribe();
            let after = calls.load(Ordering::SeqCst);
            for _ in 0..1_000 {
                assert_eq!(calls.load(Ordering::SeqCst), after, "called after removal");
                std::hint::spin_loop();
            }
        });
    }
}

/// Two threads emit tagged, increasing values while a third keeps adding `immediate` listeners:
/// every listener sees each emitter's values in order, never twice, and every listener that
/// was registered before a value's delivery started agrees on the order of what it saw.
#[test]
fn immediate_listeners_racing_emitters_see_one_order_without_repeats() {
    const PER_EMITTER: u32 = 300;
    let subject = Subject::with_value((9, 0));
    let barrier = Barrier::new(3);
    let logs: Mutex<Vec<Log>> = Mutex::new(Vec::new());
    let mut subscriptions = Vec::new();
    thread::scope(|scope| {
        for emitter in 0..2 {
            let (subject, barrier) = (&subject, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for i in 1..=PER_EMITTER {
                    subject.next((emitter, i));
                }
            });
        }
        barrier.wait();
        for _ in 0..40 {
            let log = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&log);
            subscriptions.push(subject.listen(
                move |value: &(u32, u32)| sink.lock().unwrap().push(*value),
                true,
            ));
            logs.lock().unwrap().push(log);
        }
    });
    // Every value has been delivered once the emitters returned from their last `next`... unless
    // another thread still held the role; one more emission on this thread drains everything.
    subject.next((9, 1));
    let logs = logs.into_inner().unwrap();
    let reference: Vec<(u32, u32)> = logs[0].lock().unwrap().clone();
    for log in &logs {
        let log = log.lock().unwrap();
        for emitter in 0..2 {
            let mine: Vec<u32> = log
                .iter()
                .filter(|(tag, _)| *tag == emitter)
                .map(|(_, i)| *i)
                .collect();
            assert!(
                mine.windows(2).all(|pair| pair[0] < pair[1]),
                "emitter {emitter} out of order or repeated: {mine:?}"
            );
        }
        assert_eq!(log.last(), Some(&(9, 1)), "the last value reached everyone");
        // A later listener's log, after its first (replayed) value, is a suffix of the first
        // listener's log.
        let tail = &log[1..];
        assert!(
            reference.ends_with(tail),
            "one total order: {tail:?} is not a suffix of {reference:?}"
        );
    }
    drop(subscriptions);
}
