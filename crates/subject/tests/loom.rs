//! Model checks of the delivery role and of stream wake-ups: every interleaving of tiny
//! scenarios.
#![cfg(loom)]

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures::Stream;
use keyrunner_subject::{Subject, SubjectStream};
// Counters that listeners and threads share are loom's, so that the model checker can
// interleave their reads and writes with the subject's own steps.
use loom::sync::atomic::{AtomicUsize, Ordering};
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

/// One thread's `immediate` listener holds the delivery role for its replay when another thread
/// records a value and then listens with `immediate` itself. The value recorded is queued behind
/// the replay, so the second listener must be replayed the value before it (whose delivery had
/// started) and then get the queued one delivered — never the queued value twice, once as its
/// replay and once delivered.
#[test]
fn an_immediate_listener_never_gets_a_queued_value_twice() {
    loom::model(|| {
        let subject = Subject::with_value(0);
        let (early, late) = (Log::default(), Log::default());
        let (sink, other) = (late.clone(), subject.clone());
        let racer = thread::spawn(move || {
            other.next(1);
            other.listen(move |value: &u32| sink.push(*value), true)
        });
        let sink = early.clone();
        let first = subject.listen(move |value: &u32| sink.push(*value), true);
        let second = racer.join().expect("the racer does not panic");
        for seen in [early.get(), late.get()] {
            assert!(seen == [0, 1] || seen == [1], "{seen:?}");
        }
        drop((first, second));
    });
}

/// A waker that counts its wake-ups; plain `std`, read only after the threads are joined.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// One stream and the waker it is polled with.
struct Polled {
    stream: SubjectStream<u32>,
    wakes: Arc<Counter>,
}

impl Polled {
    fn new(stream: SubjectStream<u32>) -> Self {
        Self {
            stream,
            wakes: Arc::default(),
        }
    }

    fn poll(&mut self) -> Poll<Option<u32>> {
        let waker = Waker::from(Arc::clone(&self.wakes));
        Pin::new(&mut self.stream).poll_next(&mut Context::from_waker(&waker))
    }

    fn woken(&self) -> bool {
        self.wakes.0.load(Ordering::SeqCst) > 0
    }

    /// After a `Pending` poll raced a change: the stream must have been woken, and must now
    /// yield `expected`.
    fn assert_woken_then(&mut self, expected: Option<u32>) {
        assert!(self.woken(), "lost wake-up");
        assert_eq!(self.poll(), Poll::Ready(expected));
    }
}

#[test]
fn a_value_recorded_while_a_stream_parks_wakes_it() {
    loom::model(|| {
        let subject = Subject::with_value(0);
        let mut polled = Polled::new(subject.stream());
        assert_eq!(polled.poll(), Poll::Ready(Some(0)));
        let publisher = {
            let subject = subject.clone();
            thread::spawn(move || subject.next(1))
        };
        let first = polled.poll();
        publisher.join().expect("the publisher does not panic");
        match first {
            Poll::Ready(item) => assert_eq!(item, Some(1)),
            Poll::Pending => polled.assert_woken_then(Some(1)),
        }
        assert_eq!(polled.poll(), Poll::Pending);
    });
}

#[test]
fn a_stream_created_while_a_value_is_recorded_is_woken() {
    loom::model(|| {
        let subject = Subject::new();
        let consumer = {
            let subject = subject.clone();
            thread::spawn(move || {
                let mut polled = Polled::new(subject.stream());
                let first = polled.poll();
                (polled, first)
            })
        };
        subject.next(1);
        let (mut polled, first) = consumer.join().expect("the consumer does not panic");
        match first {
            Poll::Ready(item) => assert_eq!(item, Some(1)),
            Poll::Pending => polled.assert_woken_then(Some(1)),
        }
    });
}

#[test]
fn racing_publishers_leave_a_parking_stream_with_the_last_value() {
    loom::model(|| {
        let subject = Subject::with_value(0);
        let mut polled = Polled::new(subject.stream());
        assert_eq!(polled.poll(), Poll::Ready(Some(0)));
        let publishers: Vec<_> = [1, 2]
            .into_iter()
            .map(|value| {
                let subject = subject.clone();
                thread::spawn(move || subject.next(value))
            })
            .collect();
        let mut seen = Vec::new();
        // Poll until parked: items may come in while the publishers run.
        while let Poll::Ready(item) = polled.poll() {
            seen.push(item.expect("the subject is open"));
        }
        for publisher in publishers {
            publisher.join().expect("publishers do not panic");
        }
        let last = *subject.last().expect("a value was recorded");
        if seen.last() != Some(&last) {
            polled.assert_woken_then(Some(last));
        }
        assert_eq!(polled.poll(), Poll::Pending);
    });
}

#[test]
fn close_wakes_every_parked_stream_across_batches() {
    loom::model(|| {
        let subject = Subject::<u32>::new();
        let mut parked = Polled::new(subject.stream());
        assert_eq!(parked.poll(), Poll::Pending);
        let racing = {
            let stream = subject.stream();
            thread::spawn(move || {
                let mut polled = Polled::new(stream);
                let first = polled.poll();
                (polled, first)
            })
        };
        let closer = thread::spawn(move || drop(subject));
        closer.join().expect("closing does not panic");
        let (mut racing, first) = racing.join().expect("the consumer does not panic");
        parked.assert_woken_then(None);
        match first {
            Poll::Ready(item) => assert_eq!(item, None),
            Poll::Pending => racing.assert_woken_then(None),
        }
    });
}

/// Reused allocations under racing publishers: no listener and no `last()` ever sees the
/// placeholder (0) a spare allocation holds, and every value is delivered once, in one order.
#[test]
fn reused_allocations_never_expose_a_placeholder() {
    loom::model(|| {
        let subject = Subject::with_value(1_u32);
        subject.reuse_values();
        let log = Log::default();
        let sink = log.clone();
        let _subscription = subject.listen(move |value: &u32| sink.push(*value), false);
        // Two values in, so that a spare allocation exists before the race.
        subject.next(2);
        subject.next(3);
        let other = subject.clone();
        let publisher = thread::spawn(move || {
            other.next(4);
            other.next(5);
        });
        subject.next(6);
        let last = subject.last().map(|last| *last);
        publisher.join().unwrap();

        let seen = log.get();
        assert_ne!(last, Some(0));
        assert!(!seen.contains(&0), "a placeholder was delivered: {seen:?}");
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [2, 3, 4, 5, 6], "each value once: {seen:?}");
        let (four, five) = (
            seen.iter().position(|v| *v == 4),
            seen.iter().position(|v| *v == 5),
        );
        assert!(four < five, "one publisher's values in order: {seen:?}");
    });
}

/// The uncontended path (record and start in one critical section, hand the listeners back in
/// a second) racing a contended one (a value queued, a listener added while the listeners are
/// out with the deliverer): every value reaches the listener once, in the order recorded, the
/// added listener gets exactly the values delivered after it joined, and nothing is left
/// delivering.
#[test]
fn uncontended_delivery_racing_a_contended_one() {
    loom::model(|| {
        let subject = Subject::new();
        let (log, late) = (Log::default(), Log::default());
        let sink = log.clone();
        let _first = subject.listen(move |value: &u32| sink.push(*value), false);
        let other = subject.clone();
        let sink = late.clone();
        let racer = thread::spawn(move || {
            other.next(2);
            other.listen(move |value: &u32| sink.push(*value), false)
        });
        subject.next(1);
        let second = racer.join().expect("the racer does not panic");

        let seen = log.get();
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2], "each value once: {seen:?}");
        assert_eq!(
            subject.last().as_deref(),
            seen.last(),
            "delivered in recorded order"
        );
        // The listener added by the racer gets the values whose delivery started after it.
        let joined = late.get();
        assert!(
            seen.ends_with(&joined),
            "{joined:?} is not a suffix of {seen:?}"
        );
        assert_eq!(subject.listener_count(), 2);
        subject.next(3);
        assert_eq!(log.get().last(), Some(&3));
        assert_eq!(
            late.get().last(),
            Some(&3),
            "the listener added meanwhile joined"
        );
        drop(second);
    });
}

/// Listeners of two subjects, delivered on two threads at once, each remove a listener of the
/// other subject. A removal made inside a listener does not wait for the other delivery, so
/// this cannot deadlock; once both deliveries are over, the removed listeners get nothing.
#[test]
fn cross_removals_from_inside_listeners_never_wait_for_each_other() {
    loom::model(|| {
        let (a, b) = (Subject::<u32>::new(), Subject::<u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let victim = |subject: &Subject<u32>| {
            let calls = Arc::clone(&calls);
            Arc::new(Mutex::new(Some(subject.listen(
                move |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                },
                false,
            ))))
        };
        let (victim_a, victim_b) = (victim(&a), victim(&b));
        let remover = |target: &Arc<Mutex<Option<keyrunner_subject::Subscription>>>| {
            let target = Arc::clone(target);
            move |_: &u32| {
                let subscription = target.lock().unwrap_or_else(PoisonError::into_inner).take();
                drop(subscription);
            }
        };
        let _on_a = a.listen(remover(&victim_b), false);
        let _on_b = b.listen(remover(&victim_a), false);

        let other = b.clone();
        let thread_b = thread::spawn(move || other.next(1));
        a.next(1);
        thread_b.join().expect("no panic");

        let before = calls.load(Ordering::SeqCst);
        a.next(2);
        b.next(2);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "a removed listener was called"
        );
    });
}
