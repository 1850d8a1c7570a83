//! A subject writes a new value into the allocation of the value it replaces when nobody else
//! holds that one: a reused allocation never changes a value someone can still see, retired
//! values are dropped at once, and racing publishers and readers only ever see published values.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;

use keyrunner_subject::Subject;

/// A value that counts how many of its kind are alive.
struct Tracked {
    number: u64,
    alive: Option<Arc<AtomicUsize>>,
}

impl Tracked {
    fn new(number: u64, alive: &Arc<AtomicUsize>) -> Self {
        alive.fetch_add(1, Ordering::SeqCst);
        Self {
            number,
            alive: Some(Arc::clone(alive)),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(alive) = &self.alive {
            alive.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn retired_values_are_dropped_at_once_and_listeners_see_every_value() {
    let alive = Arc::new(AtomicUsize::new(0));
    let subject = Subject::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let _subscription = subject.listen(
        move |value: &Tracked| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(value.number);
        },
        false,
    );
    for number in 1..=50 {
        // Every tenth value is read (and the `Arc` dropped) before the next: then the next
        // value reuses its allocation or not, with the same outcome.
        if number % 10 == 0 {
            drop(subject.last());
        }
        subject.next(Tracked::new(number, &alive));
        // Only the last value is alive: the one it replaced is gone.
        assert_eq!(alive.load(Ordering::SeqCst), 1, "value {number}");
    }
    assert_eq!(
        *seen.lock().unwrap_or_else(PoisonError::into_inner),
        (1..=50).collect::<Vec<_>>()
    );
    drop(subject);
    assert_eq!(alive.load(Ordering::SeqCst), 0, "all dropped");
}

#[test]
fn a_value_someone_holds_is_never_reused() {
    let subject = Subject::new();
    subject.next(String::from("first"));
    subject.next(String::from("second"));
    let held = subject.last().expect("a value was recorded");
    let replay = Arc::new(Mutex::new(Vec::new()));
    for round in 0..20 {
        subject.next(format!("value {round}"));
        if round == 10 {
            // An immediate listener's replay also holds a value for a moment.
            let sink = Arc::clone(&replay);
            let _late = subject.listen(
                move |value: &String| {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(value.clone());
                },
                true,
            );
        }
    }
    assert_eq!(*held, "second");
    assert_eq!(
        *replay.lock().unwrap_or_else(PoisonError::into_inner),
        ["value 10"]
    );
    assert_eq!(
        subject.last().as_deref().map(String::as_str),
        Some("value 19")
    );
}

#[test]
fn racing_publishers_and_readers_only_see_published_values() {
    // Every published value is non-zero. Publishers race each other (so values queue and
    // allocations are reused or not), a reader keeps taking `last()` and a listener checks
    // every delivered value.
    const PER_THREAD: u64 = 20_000;
    let subject = Subject::with_value(1_u64);
    let zeros = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let (count, sink) = (Arc::clone(&delivered), Arc::clone(&zeros));
    let _subscription = subject.listen(
        move |value: &u64| {
            count.fetch_add(1, Ordering::Relaxed);
            if *value == 0 {
                sink.fetch_add(1, Ordering::Relaxed);
            }
        },
        false,
    );
    let start = Barrier::new(3);
    let done = AtomicUsize::new(0);
    thread::scope(|scope| {
        for publisher in 0..2_u64 {
            let (subject, start, done) = (&subject, &start, &done);
            scope.spawn(move || {
                start.wait();
                for step in 0..PER_THREAD {
                    subject.next(1 + publisher * PER_THREAD + step);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let (subject, start, done, zeros) = (&subject, &start, &done, &zeros);
        scope.spawn(move || {
            start.wait();
            while done.load(Ordering::SeqCst) < 2 {
                let last = subject.last().expect("the subject has a value");
                if *last == 0 {
                    zeros.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
    assert_eq!(
        zeros.load(Ordering::Relaxed),
        0,
        "an unpublished value was seen"
    );
    assert_eq!(delivered.load(Ordering::Relaxed), 2 * PER_THREAD as usize);
}

/// A value that panics when dropped, if armed.
struct Bomb {
    number: u64,
    armed: bool,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.armed && !thread::panicking() {
            panic!("value dropped");
        }
    }
}

#[test]
fn a_panic_dropping_a_replaced_value_is_resumed_after_delivery_and_the_subject_goes_on() {
    let subject = Subject::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let _subscription = subject.listen(
        move |value: &Bomb| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(value.number);
        },
        false,
    );
    let mut panicked = Vec::new();
    for number in 1..=6 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            subject.next(Bomb {
                number,
                armed: number % 2 == 0,
            });
        }));
        if let Err(payload) = outcome {
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"value dropped"));
            panicked.push(number);
        }
    }
    // The even values panicked when the next value replaced them; every value was delivered.
    assert_eq!(panicked, [3, 5]);
    assert_eq!(
        *seen.lock().unwrap_or_else(PoisonError::into_inner),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(subject.last().map(|last| last.number), Some(6));
    // The last value goes when the subject does.
    let closing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(subject)));
    assert!(
        closing.is_err(),
        "the last value is dropped with the subject"
    );
}
