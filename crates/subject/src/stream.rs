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

#[cfg(doc)]
use crate::raw::RawSubject;
use crate::raw::discard;
use crate::subject::Shared;
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
    #[inline]
    pub(crate) fn record(&self, version: u64) {
        self.stamp.store(version << 1, Ordering::Release);
    }

    /// The version last recorded.
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.stamp.load(Ordering::Acquire) >> 1
    }

    /// Counts a new stream; called under the state lock, so that a publisher that records a
    /// value after this sees the count.
    pub(crate) fn count_stream(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// Polls the stream `watcher` follows. `latest(seen)` locks the subject's state and returns
    /// the last value with its version, unless that version is `seen`; then it returns whether
    /// the subject is closed.
    pub(crate) fn poll<T: Clone>(
        &self,
        watcher: &mut Watcher,
        cx: &mut Context<'_>,
        latest: impl Fn(u64) -> Result<(u64, Arc<T>), bool>,
    ) -> Poll<Option<T>> {
        if watcher.terminated {
            return Poll::Ready(None);
        }
        let mut armed = false;
        loop {
            let stamp = self.stamp.load(Ordering::Acquire);
            if stamp != watcher.seen << 1 {
                if stamp == watcher.seen << 1 | CLOSED {
                    // Closed, and the final version was yielded already: no lock needed.
                    watcher.terminated = true;
                    return Poll::Ready(None);
                }
                match latest(watcher.seen) {
                    Ok((version, value)) => {
                        watcher.seen = version;
                        return Poll::Ready(Some(T::clone(&value)));
                    }
                    Err(true) => {
                        watcher.terminated = true;
                        return Poll::Ready(None);
                    }
                    Err(false) => {}
                }
            }
            if armed {
                return Poll::Pending;
            }
            // Arm, then look again: a value recorded in between is seen by that second look.
            self.arm(watcher.key, cx.waker());
            armed = true;
        }
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
    pub(crate) fn insert(&self) -> usize {
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

    /// Frees the slot of a stream that is dropped.
    pub(crate) fn remove(&self, watcher: Watcher) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        let key = watcher.key;
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

/// Where a latest-value stream of a [`RawSubject`] stands: its slot among the subject's waiters
/// and the version it yielded last. Made by [`RawSubject::watch`], polled with
/// [`RawSubject::poll_watch`], given back with [`RawSubject::unwatch`].
#[must_use = "a watcher keeps its slot in the subject until it is given to `unwatch`"]
#[derive(Debug)]
pub struct Watcher {
    /// This stream's slot in the subject's waiters.
    key: usize,
    /// Version of the last item yielded; 0 before the first.
    seen: u64,
    terminated: bool,
}

impl Watcher {
    pub(crate) fn new(key: usize) -> Self {
        Self {
            key,
            seen: 0,
            terminated: false,
        }
    }

    /// Whether the stream has ended (the subject was closed and its last value yielded).
    pub fn is_terminated(&self) -> bool {
        self.terminated
    }
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
    shared: Arc<Shared<T>>,
    /// `None` only once dropped.
    watcher: Option<Watcher>,
}

impl<T> SubjectStream<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Self {
        let watcher = shared.raw.watch();
        Self {
            shared,
            watcher: Some(watcher),
        }
    }
}

impl<T: Clone> Stream for SubjectStream<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        match &mut this.watcher {
            Some(watcher) => this.shared.raw.poll_watch(watcher, cx),
            None => Poll::Ready(None),
        }
    }
}

impl<T: Clone> FusedStream for SubjectStream<T> {
    fn is_terminated(&self) -> bool {
        self.watcher.as_ref().is_none_or(Watcher::is_terminated)
    }
}

impl<T> Drop for SubjectStream<T> {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            self.shared.raw.unwatch(watcher);
        }
    }
}

impl<T> fmt::Debug for SubjectStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seen, terminated) = self
            .watcher
            .as_ref()
            .map_or((0, true), |watcher| (watcher.seen, watcher.terminated));
        f.debug_struct("SubjectStream")
            .field("seen", &seen)
            .field("terminated", &terminated)
            .finish_non_exhaustive()
    }
}
