//! The latest-value stream: first item, skipping, wake-ups, end, no buffering.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread;

use futures::executor::block_on;
use futures::stream::{FusedStream, Stream, StreamExt};
use futures::task::{ArcWake, waker};
use keyrunner_subject::{Subject, SubjectStream};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `stream` once with a counting waker.
struct Poller {
    wakes: Arc<CountingWaker>,
}

impl Poller {
    fn new() -> Self {
        Self {
            wakes: Arc::default(),
        }
    }

    fn poll<T: Clone>(&self, stream: &mut SubjectStream<T>) -> Poll<Option<T>> {
        let waker = waker(Arc::clone(&self.wakes));
        Pin::new(stream).poll_next(&mut Context::from_waker(&waker))
    }

    fn wakes(&self) -> usize {
        self.wakes.0.load(Ordering::SeqCst)
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
