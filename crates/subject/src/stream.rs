//! The latest-value [`SubjectStream`], and the waiters through which a subject wakes its streams.
//!
//! # Protocol
//!
//! A stream compares the number of the value it saw last with [`Streams::stamp`], an atomic copy
//! of the subject's version (and closed flag): when they match it has nothing to do and takes no
//! lock. Otherwise it locks the subject's state once and clones the latest value.
//!
//! To wait, a stream *arms* its slot (stores its waker, under the waiters' lock) and then reads
//! the stamp again. A publisher stores the stamp, then locks the waiters and takes every armed
//! waker. The waiters' lock orders the two: if the publisher locks after the stream armed, it
//! finds the waker; if before, the stream's second read comes after the publisher's store and
//! sees the new value. No wake-up is lost either way.
//!
//! Each stream owns one slot for its whole life; re-arming stores a waker in place (nothing
//! when the same task waits again), so waiting allocates nothing in the steady state. Wakers are
//! taken in batches and woken with no lock held.

use std::fmt;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_core::{FusedStream, Stream};
use slab::Slab;

use crate::subject::{Inner, discard};
use crate::sync::{self, AtomicU64, AtomicUsize, Mutex, Ordering};

/// The closed flag in [`Streams::stamp`]; the version sits above it.
const CLOSED: u64 = 1;

/// Wakers taken per acquisition of the waiters' lock: the batch lives on the stack and the lock
/// is held briefly. One under the model checker, so that two streams already span two batches.
const BATCH: usize = if cfg!(loom) { 1 } else { 32 };

/// The subject's side of its streams: what they check without locking and where they wait.
pub(crate) struct Streams {
    /// `version << 1 | CLOSED`: stored whenever the state's version changes, under the state
    /// lock, and on close. A stream that finds `seen << 1` here has nothing to do.
    stamp: AtomicU64,
    /// Live streams, counted under the state lock (see [`SubjectStream::new`]) so that a
    /// publisher finding zero here may skip the waiters' lock.
    live: AtomicUsize,
    /// One slot per live stream; boxed on the first stream, since most subjects (every key of
    /// a repository has one) never have a stream.
    waiters: Mutex<Option<Box<Waiters>>>,
}

/// Everything behind the waiters' lock.
#[derive(Default)]
struct Waiters {
    /// One slot per live stream, at the stream's key.
    slots: Slab<Slot>,
    /// Keys of the armed slots that no publisher has taken yet; each armed slot's key is either
    /// here once or in the list of a publisher that will take its waker.
    armed: Vec<usize>,
    /// An empty buffer to put in place of `armed` when a publisher takes it.
    spare: Vec<usize>,
}

/// One stream's place to wait.
struct Slot {
    /// The waker to call on the next change; `Some` while the slot is armed.
    waker: Option<Waker>,
    /// Where the key sits in [`Waiters::armed`], if it is still there.
    at: usize,
}

impl Streams {
    /// The streams of a subject whose version is `version`.
    pub(crate) fn new(version: u64) -> Self {
        Self {
            stamp: AtomicU64::new(version << 1),
            live: AtomicUsize::new(0),
            waiters: Mutex::new(None),
        }
    }

    /// Publishes the state's new version to the streams; called under the state lock, then
    /// followed by [`wake`](Self::wake) once the lock is released.
    pub(crate) fn record(&self, version: u64) {
        self.stamp.store(version << 1, Ordering::Release);
    }

    /// Marks the subject closed for the streams and wakes them; called once the state says
    /// closed, when no value can be recorded any more.
    pub(crate) fn close(&self) {
        self.stamp.fetch_or(CLOSED, Ordering::Release);
        self.wake();
    }

    /// Wakes every armed stream. Call after storing the stamp.
    ///
    /// Takes the armed list in one step, so the streams re-arming meanwhile wait for the next
    /// change instead of keeping this loop busy; then takes its wakers in batches and wakes each
    /// batch with no lock held, since a woken task may poll a stream of this subject at once.
    #[inline]
    pub(crate) fn wake(&self) {
        // Inlined into every publisher: a subject without streams pays one load.
        if self.live.load(Ordering::Acquire) != 0 {
            self.wake_armed();
        }
    }

    fn wake_armed(&self) {
        let mut guard = sync::lock(&self.waiters);
        let Some(waiters) = guard.as_deref_mut() else {
            return;
        };
        if waiters.armed.is_empty() {
            return;
        }
        let spare = mem::take(&mut waiters.spare);
        let mut keys = mem::replace(&mut waiters.armed, spare);
        let mut batch: [Option<Waker>; BATCH] = [const { None }; BATCH];
        for chunk in keys.chunks(BATCH) {
            if let Some(waiters) = guard.as_deref_mut() {
                for (waker, &key) in batch.iter_mut().zip(chunk) {
                    // A stream dropped since it armed has no slot; its key may even belong to
                    // a newer stream by now, which is then woken once for nothing.
                    *waker = waiters
                        .slots
                        .get_mut(key)
                        .and_then(|slot| slot.waker.take());
                }
            }
            drop(guard);
            for waker in batch.iter_mut().filter_map(Option::take) {
                wake(waker);
            }
            guard = sync::lock(&self.waiters);
        }
        keys.clear();
        if let Some(waiters) = guard.as_deref_mut()
            && keys.capacity() > waiters.spare.capacity()
        {
            waiters.spare = keys;
        }
    }

    /// Gives a new stream its slot.
    fn insert(&self) -> usize {
        sync::lock(&self.waiters)
            .get_or_insert_default()
            .slots
            .insert(Slot { waker: None, at: 0 })
    }

    /// Arms the slot at `key` with `waker`.
    fn arm(&self, key: usize, waker: &Waker) {
        let mut waiters = sync::lock(&self.waiters);
        let Some(Waiters { slots, armed, .. }) = waiters.as_deref_mut() else {
            return;
        };
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        let replaced = match &mut slot.waker {
            Some(current) if current.will_wake(waker) => None,
            Some(current) => Some(mem::replace(current, waker.clone())),
            None => {
                slot.waker = Some(waker.clone());
                slot.at = armed.len();
                armed.push(key);
                None
            }
        };
        drop(waiters);
        // A waker's destructor is the executor's code: run it unlocked.
        drop(replaced);
    }

    /// Frees the slot at `key` when its stream is dropped.
    fn remove(&self, key: usize) {
        let mut waiters = sync::lock(&self.waiters);
        let Some(Waiters { slots, armed, .. }) = waiters.as_deref_mut() else {
            return;
        };
        let slot = slots.try_remove(key);
        if let Some(Slot { waker: Some(_), at }) = slot {
            // Still listed here unless a publisher took the list; then that publisher finds the
            // slot gone (or reused) instead.
            if armed.get(at) == Some(&key) {
                armed.swap_remove(at);
                if let Some(&moved) = armed.get(at)
                    && let Some(moved) = slots.get_mut(moved)
                {
                    moved.at = at;
                }
            }
        }
        drop(waiters);
        drop(slot);
    }
}

/// Wakes `waker`. A waker is the executor's code: should it panic, the panic is dropped here so
/// that the other streams are still woken and the publisher's delivery goes on.
fn wake(waker: Waker) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| waker.wake())) {
        discard(payload);
    }
}

impl<T> Inner<T> {
    /// Wakes the streams waiting for a change; call after the change was recorded (its stamp
    /// stored) and the state lock released.
    #[inline]
    pub(crate) fn wake_streams(&self) {
        self.streams.wake();
    }
}

/// What a stream finds when it looks at its subject.
enum Latest<T> {
    /// A value it has not yielded yet, with its version.
    Value(u64, Arc<T>),
    /// Nothing new, and the subject is open.
    Unchanged,
    /// Nothing new, and the subject is closed.
    Closed,
}

/// A [`Stream`] of a subject's latest value, returned by
/// [`Subject::stream`](crate::Subject::stream).
///
/// - Its first item is the subject's last value, if there is one.
/// - After that, whenever a value was recorded since the previous item, the next item is the
///   *latest* value: intermediate values may be skipped, the latest one is never missed. Items
///   follow the subject's total order.
/// - The publisher never waits for it and nothing is buffered: the stream holds no queue, only
///   the number of the value it saw last. Each item is one clone of the value.
/// - It ends (`None`, and stays ended) when every [`Subject`](crate::Subject) handle is gone,
///   after yielding the value it had not seen.
///
/// It is independent of the listeners: a stream is not a listener and does not keep any alive.
/// A poll that finds nothing new does not lock the subject, and waiting allocates nothing once
/// the stream has waited once.
///
/// # Examples
///
/// ```
/// use futures::executor::block_on;
/// use futures::StreamExt;
///
/// let subject = keyrunner_subject::Subject::new();
/// let stream = subject.stream();
/// let publisher = std::thread::spawn(move || {
///     for value in 1..=100 {
///         subject.next(value);
///     }
/// });
/// let seen: Vec<u32> = block_on(stream.collect());
/// publisher.join().unwrap();
/// assert_eq!(seen.last(), Some(&100));
/// assert!(seen.windows(2).all(|pair| pair[0] < pair[1]));
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct SubjectStream<T> {
    inner: Arc<Inner<T>>,
    /// This stream's slot in the subject's waiters.
    key: usize,
    /// Version of the last item yielded; 0 before the first.
    seen: u64,
    terminated: bool,
}

impl<T> SubjectStream<T> {
    pub(crate) fn new(inner: Arc<Inner<T>>) -> Self {
        let key = inner.streams.insert();
        {
            // Counted under the state lock: a publisher that records a value after this sees
            // the count and locks the waiters; one that recorded before is seen by the stamp
            // this stream reads next.
            let _state = inner.lock();
            inner.streams.live.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            inner,
            key,
            seen: 0,
            terminated: false,
        }
    }

    /// Looks at the subject, knowing from `stamp` that something changed.
    fn latest(&self, stamp: u64) -> Latest<T> {
        if stamp == self.seen << 1 | CLOSED {
            // Closed, and the final version was yielded already: no lock needed.
            return Latest::Closed;
        }
        let state = self.inner.lock();
        match &state.last {
            Some(value) if state.version != self.seen => {
                Latest::Value(state.version, Arc::clone(value))
            }
            _ if state.closed => Latest::Closed,
            _ => Latest::Unchanged,
        }
    }
}

impl<T: Clone> Stream for SubjectStream<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if this.terminated {
            return Poll::Ready(None);
        }
        let mut armed = false;
        loop {
            let stamp = this.inner.streams.stamp.load(Ordering::Acquire);
            if stamp != this.seen << 1 {
                match this.latest(stamp) {
                    Latest::Value(version, value) => {
                        this.seen = version;
                        return Poll::Ready(Some(T::clone(&value)));
                    }
                    Latest::Closed => {
                        this.terminated = true;
                        return Poll::Ready(None);
                    }
                    Latest::Unchanged => {}
                }
            }
            if armed {
                return Poll::Pending;
            }
            // Arm, then look again: a value recorded in between is seen by that second look.
            this.inner.streams.arm(this.key, cx.waker());
            armed = true;
        }
    }
}

impl<T: Clone> FusedStream for SubjectStream<T> {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl<T> Drop for SubjectStream<T> {
    fn drop(&mut self) {
        self.inner.streams.remove(self.key);
        self.inner.streams.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> fmt::Debug for SubjectStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectStream")
            .field("seen", &self.seen)
            .field("terminated", &self.terminated)
            .finish_non_exhaustive()
    }
}
