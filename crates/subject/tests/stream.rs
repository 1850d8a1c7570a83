//! The latest-value stream: first item, skipping, wake-ups, end, no buffering.

use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;

use futures::executor::block_on;
use futures::stream::{FusedStream, Stream, StreamExt};
use futures::task::{ArcWake, waker};
use futures_test::task::{AwokenCount, new_count_waker};
use keyrunner_subject::{Subject, SubjectStream};

/// Polls a stream with a waker that counts its wake-ups.
struct Poller {
    waker: Waker,
    wakes: AwokenCount,
}

impl Poller {
    fn new() -> Self {
        let (waker, wakes) = new_count_waker();
        Self { waker, wakes }
    }

    fn poll<T: Clone>(&self, stream: &mut SubjectStream<T>) -> Poll<Option<T>> {
        Pin::new(stream).poll_next(&mut Context::from_waker(&self.waker))
    }

    fn wakes(&self) -> usize {
        self.wakes.get()
    }
}

#[test]
fn first_poll_yields_the_last_value() {
    let subject = Subject::with_value(1);
    let mut stream = subject.stream();
    let poller = Poller::new();
    assert_eq!(poller.poll(&mut stream), Poll::Ready(Some(1)));
    assert_eq!(poller.poll(&mut stream), Poll::Pending);

    subject.next(2);
    let mut late = subject.stream();
    assert_eq!(poller.poll(&mut late), Poll::Ready(Some(2)));
}

#[test]
fn no_value_means_pending() {
    let subject = Subject::<u32>::new();
    let mut stream = subject.stream();
    assert_eq!(Poller::new().poll(&mut stream), Poll::Pending);
}

#[test]
fn intermediate_values_are_skipped_for_the_latest() {
    let subject = Subject::new();
    let mut stream = subject.stream();
    subject.next(1);
    subject.next(2);
    subject.next(3);
    let poller = Poller::new();
    assert_eq!(poller.poll(&mut stream), Poll::Ready(Some(3)));
    assert_eq!(poller.poll(&mut stream), Poll::Pending);
}

#[test]
fn next_wakes_a_waiting_stream() {
    let subject = Subject::with_value(0);
    let mut stream = subject.stream();
    let poller = Poller::new();
    assert_eq!(poller.poll(&mut stream), Poll::Ready(Some(0)));
    assert_eq!(poller.poll(&mut stream), Poll::Pending);
    assert_eq!(poller.wakes(), 0);
    subject.next(5);
    assert_eq!(poller.wakes(), 1);
    assert_eq!(poller.poll(&mut stream), Poll::Ready(Some(5)));
    assert_eq!(poller.poll(&mut stream), Poll::Pending);
    assert!(subject.update(|last| last.map(|value| value + 1)));
    assert_eq!(poller.wakes(), 2);
    assert_eq!(poller.poll(&mut stream), Poll::Ready(Some(6)));
}

#[test]
fn ends_when_every_handle_is_dropped() {
    let subject = Subject::<u32>::new();
    let clone = subject.clone();
    let mut stream = subject.stream();
    let poller = Poller::new();
    assert_eq!(poller.poll(&mut stream), Poll::Pending);
    drop(subject);
    assert_eq!(poller.wakes(), 0);
    assert_eq!(poller.poll(&mut stream), Poll::Pending);
    drop(clone);
    assert_eq!(poller.wakes(), 1);
    assert_eq!(poller.poll(&mut stream), Poll::Ready(None));
    assert!(stream.is_terminated());
    assert_eq!(poller.poll(&mut stream), Poll::Ready(None));
}

#[test]
fn the_unseen_last_value_comes_before_the_end() {
    let subject = Subject::new();
    let mut stream = subject.stream();
    subject.next(1);
    subject.next(4);
    drop(subject);
    let poller = Poller::new();
    assert!(!stream.is_terminated());
    assert_eq!(poller.poll(&mut stream), Poll::Ready(Some(4)));
    assert_eq!(poller.poll(&mut stream), Poll::Ready(None));
}

/// Counts the live instances of itself and its clones.
struct Tracked {
    live: Arc<AtomicUsize>,
    clones: Arc<AtomicUsize>,
}

impl Tracked {
    fn new(live: &Arc<AtomicUsize>, clones: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Self {
            live: Arc::clone(live),
            clones: Arc::clone(clones),
        }
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self::new(&self.live, &self.clones)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn a_stream_that_is_never_polled_buffers_nothing() {
    let (live, clones) = (Arc::default(), Arc::default());
    let subject = Subject::new();
    let idle = subject.stream();
    let mut parked = subject.stream();
    let poller = Poller::new();
    assert!(poller.poll(&mut parked).is_pending());
    for _ in 0..10_000 {
        subject.next(Tracked::new(&live, &clones));
    }
    // Only the subject's last value is alive: neither stream holds a queue.
    assert_eq!(live.load(Ordering::SeqCst), 1);
    assert_eq!(clones.load(Ordering::SeqCst), 0);
    // One clone per item yielded.
    assert!(matches!(poller.poll(&mut parked), Poll::Ready(Some(_))));
    assert_eq!(clones.load(Ordering::SeqCst), 1);
    drop((idle, parked, subject));
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[test]
fn a_concurrent_consumer_sees_an_increasing_run_ending_with_the_last_value() {
    for _ in 0..50 {
        let subject = Subject::new();
        let stream = subject.stream();
        let seen = thread::scope(|scope| {
            let consumer = scope.spawn(move || block_on(stream.collect::<Vec<u32>>()));
            for value in 1..=1_000 {
                subject.next(value);
            }
            drop(subject);
            consumer
                .join()
                .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
        });
        assert_eq!(seen.last(), Some(&1_000));
        assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    }
}

#[test]
fn streams_work_with_stream_combinators() {
    let subject = Subject::with_value(0);
    let stream = subject.stream().fuse();
    let firsts = thread::scope(|scope| {
        let reader = scope.spawn(|| block_on(stream.take(3).collect::<Vec<u32>>()));
        let mut value = 0;
        while !reader.is_finished() {
            // Keep emitting until the reader has what it needs; each value wakes it.
            value += 1;
            subject.next(value);
        }
        reader
            .join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    });
    assert_eq!(firsts.len(), 3);
    assert!(
        firsts.windows(2).all(|pair| pair[0] < pair[1]),
        "{firsts:?}"
    );
}

#[test]
fn debug_shows_progress() {
    let subject = Subject::with_value(1);
    let mut stream = subject.stream();
    assert!(format!("{stream:?}").contains("seen: 0"));
    let _ = Poller::new().poll(&mut stream);
    assert!(format!("{stream:?}").contains("seen: 1"));
}

#[test]
fn every_parked_stream_is_woken_once_per_change() {
    // More streams than are woken per batch.
    let subject = Subject::with_value(0);
    let mut parked: Vec<_> = (0..100)
        .map(|_| (subject.stream(), Poller::new()))
        .collect();
    for (stream, poller) in &mut parked {
        assert_eq!(poller.poll(stream), Poll::Ready(Some(0)));
        assert_eq!(poller.poll(stream), Poll::Pending);
        // Waiting again with the same waker registers nothing new.
        assert_eq!(poller.poll(stream), Poll::Pending);
    }
    for round in 1..=3 {
        subject.next(round);
        for (stream, poller) in &mut parked {
            assert_eq!(poller.wakes(), round as usize);
            assert_eq!(poller.poll(stream), Poll::Ready(Some(round)));
            assert_eq!(poller.poll(stream), Poll::Pending);
        }
    }
}

#[test]
fn a_stream_that_waits_again_with_another_waker_wakes_that_one() {
    let subject = Subject::with_value(0);
    let mut stream = subject.stream();
    let (first, second) = (Poller::new(), Poller::new());
    assert_eq!(first.poll(&mut stream), Poll::Ready(Some(0)));
    assert_eq!(first.poll(&mut stream), Poll::Pending);
    assert_eq!(second.poll(&mut stream), Poll::Pending);
    subject.next(1);
    assert_eq!((first.wakes(), second.wakes()), (0, 1));
}

#[test]
fn dropping_a_parked_stream_leaves_the_others_waiting() {
    let subject = Subject::<u32>::new();
    let mut streams: Vec<_> = (0..5).map(|_| (subject.stream(), Poller::new())).collect();
    for (stream, poller) in &mut streams {
        assert_eq!(poller.poll(stream), Poll::Pending);
    }
    let (dropped, dropped_poller) = streams.remove(1);
    drop(dropped);
    let (mut newcomer, newcomer_poller) = (subject.stream(), Poller::new());
    subject.next(1);
    assert_eq!(dropped_poller.wakes(), 0);
    assert_eq!(newcomer_poller.wakes(), 0);
    for (stream, poller) in &mut streams {
        assert_eq!(poller.wakes(), 1);
        assert_eq!(poller.poll(stream), Poll::Ready(Some(1)));
    }
    assert_eq!(newcomer_poller.poll(&mut newcomer), Poll::Ready(Some(1)));
}

/// A waker that, when woken, uses the subject: no lock may be held while it runs.
struct Reentrant {
    subject: Mutex<Option<Subject<u32>>>,
    wakes: AtomicUsize,
}

impl ArcWake for Reentrant {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if arc_self.wakes.fetch_add(1, Ordering::SeqCst) > 0 {
            return;
        }
        let subject = arc_self
            .subject
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .expect("the subject is set before the first wake-up");
        let mut stream = subject.stream();
        let poller = Poller::new();
        assert!(poller.poll(&mut stream).is_ready());
        assert_eq!(poller.poll(&mut stream), Poll::Pending);
        subject.next(100);
        assert_eq!(poller.wakes(), 1);
        drop((stream, subject));
    }
}

#[test]
fn a_woken_task_may_use_the_subject_at_once() {
    let subject = Subject::with_value(0);
    let reentrant = Arc::new(Reentrant {
        subject: Mutex::new(Some(subject.clone())),
        wakes: AtomicUsize::new(0),
    });
    let mut streams: Vec<_> = (0..40).map(|_| subject.stream()).collect();
    let poller = Poller::new();
    let reentrant_waker = waker(Arc::clone(&reentrant));
    let mut cx = Context::from_waker(&reentrant_waker);
    for (index, stream) in streams.iter_mut().enumerate() {
        assert_eq!(poller.poll(stream), Poll::Ready(Some(0)));
        // One stream, in the middle of a batch, waits with the waker that re-enters.
        let pending = if index == 20 {
            Pin::new(stream).poll_next(&mut cx)
        } else {
            poller.poll(stream)
        };
        assert_eq!(pending, Poll::Pending);
    }
    subject.next(1);
    // Woken once each, by `next(1)` or by the re-entrant `next(100)`, whichever came first.
    assert_eq!(poller.wakes(), 39);
    assert_eq!(reentrant.wakes.load(Ordering::SeqCst), 1);
    for stream in &mut streams {
        assert_eq!(poller.poll(stream), Poll::Ready(Some(100)));
    }
}

/// A waker that panics when woken.
struct Panicking;

impl ArcWake for Panicking {
    fn wake_by_ref(_: &Arc<Self>) {
        panic!("waker panicked");
    }
}

#[test]
fn a_panicking_waker_does_not_keep_other_streams_asleep() {
    let subject = Subject::with_value(0);
    let (mut first, mut bad, mut last) = (subject.stream(), subject.stream(), subject.stream());
    let poller = Poller::new();
    for stream in [&mut first, &mut bad, &mut last] {
        assert_eq!(poller.poll(stream), Poll::Ready(Some(0)));
    }
    assert_eq!(poller.poll(&mut first), Poll::Pending);
    let panicking = waker(Arc::new(Panicking));
    let bad_poll = Pin::new(&mut bad).poll_next(&mut Context::from_waker(&panicking));
    assert_eq!(bad_poll, Poll::Pending);
    assert_eq!(poller.poll(&mut last), Poll::Pending);

    let outcome = panic::catch_unwind(AssertUnwindSafe(|| subject.next(1)));
    assert!(outcome.is_ok(), "a waker's panic reached the publisher");
    assert_eq!(poller.wakes(), 2);
    for stream in [&mut first, &mut bad, &mut last] {
        assert_eq!(poller.poll(stream), Poll::Ready(Some(1)));
    }
    // The subject is still usable, and the streams wait again.
    assert_eq!(poller.poll(&mut first), Poll::Pending);
    subject.next(2);
    assert_eq!(poller.wakes(), 3);
}

#[test]
fn streams_created_polled_and_dropped_while_values_race_in_never_stall() {
    const CONSUMERS: usize = 6;
    const PER_PUBLISHER: u32 = 2_000;
    const DONE: u32 = u32::MAX;
    for _ in 0..20 {
        let subject = Subject::new();
        let start = Barrier::new(CONSUMERS + 2);
        let runs = thread::scope(|scope| {
            let consumers: Vec<_> = (0..CONSUMERS)
                .map(|index| {
                    let (mut stream, start, subject) = (subject.stream(), &start, &subject);
                    scope.spawn(move || {
                        start.wait();
                        let mut seen = Vec::new();
                        while let Some(value) = block_on(stream.next()) {
                            seen.push(value);
                            if value == DONE {
                                break;
                            }
                            // Half the consumers also park and drop short-lived streams,
                            // churning the waiters while values are recorded.
                            if index % 2 == 0 {
                                let mut extra = subject.stream();
                                let waker = Waker::noop();
                                let _ =
                                    Pin::new(&mut extra).poll_next(&mut Context::from_waker(waker));
                            }
                        }
                        seen
                    })
                })
                .collect();
            let publishers: Vec<_> = [0, 1]
                .into_iter()
                .map(|publisher| {
                    let (subject, start) = (&subject, &start);
                    scope.spawn(move || {
                        start.wait();
                        for index in 1..=PER_PUBLISHER {
                            subject.next(publisher * 1_000_000 + index);
                        }
                    })
                })
                .collect();
            for publisher in publishers {
                publisher
                    .join()
                    .unwrap_or_else(|payload| panic::resume_unwind(payload));
            }
            // The latest value is never missed: every consumer ends on it.
            subject.next(DONE);
            consumers
                .into_iter()
                .map(|consumer| {
                    consumer
                        .join()
                        .unwrap_or_else(|payload| panic::resume_unwind(payload))
                })
                .collect::<Vec<_>>()
        });
        for seen in runs {
            assert_eq!(seen.last(), Some(&DONE));
            for publisher in [0, 1] {
                let own: Vec<_> = seen
                    .iter()
                    .filter(|value| **value != DONE && **value / 1_000_000 == publisher)
                    .collect();
                assert!(own.windows(2).all(|pair| pair[0] < pair[1]), "{own:?}");
            }
        }
    }
}
