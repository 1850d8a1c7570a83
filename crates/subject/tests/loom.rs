//! Model checks of the delivery role: every interleaving of tiny scenarios.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use keyrunner_subject::Subject;
use loom::thread;

/// A log that listeners push into; plain `std`, since listeners never run concurrently.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u32>>>);

impl Log {
    fn push(&self, value: u32) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }

    fn get(&self) -> Vec<u32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[test]
fn concurrent_and_reentrant_nexts_form_one_total_order() {
    loom::model(|| {
        let subject = Subject::new();
        let (a, b) = (Log::default(), Log::default());
        let (sink, inner) = (a.clone(), subject.clone());
        let echo = subject.listen(
            move |value: &u32| {
                sink.push(*value);
                if *value == 1 {
                    inner.next(10);
                }
            },
            false,
        );
        let sink = b.clone();
        let plain = subject.listen(move |value: &u32| sink.push(*value), false);

        let threads: Vec<_> = [1, 2]
            .into_iter()
            .map(|value| {
                let subject = subject.clone();
                thread::spawn(move || subject.next(value))
            })
            .collect();
        for handle in threads {
            handle.join().expect("emitters do not panic");
        }

        let order = a.get();
        assert_eq!(b.get(), order, "listeners disagree");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 10], "lost or duplicated: {order:?}");
        let at = |value| order.iter().position(|seen| *seen == value);
        assert!(at(1) < at(10), "depth-first: {order:?}");
        // The echo listener owns a clone of the subject: removing it breaks the cycle.
        drop((echo, plain));
    });
}

#[test]
fn no_call_after_unsubscribe_returns() {
    loom::model(|| {
        let subject = Subject::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let subscription = subject.listen(
            move |_: &u32| {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            false,
        );
        let emitter = {
            let subject = subject.clone();
            thread::spawn(move || {
                subject.next(1);
                subject.next(2);
            })
        };
        subscription.unsubscribe();
        let after = calls.load(Ordering::SeqCst);
        emitter.join().expect("the emitter does not panic");
        assert_eq!(calls.load(Ordering::SeqCst), after, "called after removal");
    });
}

#[test]
fn immediate_listen_racing_next_sees_no_duplicate_or_reordering() {
    loom::model(|| {
        let subject = Subject::with_value(0);
        let _busy = subject.listen(|_: &u32| {}, false);
        let emitter = {
            let subject = subject.clone();
            thread::spawn(move || subject.next(1))
        };
        let log = Log::default();
        let sink = log.clone();
        let subscription = subject.listen(move |value: &u32| sink.push(*value), true);
        emitter.join().expect("the emitter does not panic");
        let seen = log.get();
        assert!(seen == [0, 1] || seen == [1], "{seen:?}");
        drop(subscription);
    });
}
