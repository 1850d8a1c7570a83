//! The subject without its shared handle: [`RawSubject`], for layers that keep a subject inside
//! an allocation of their own.
//!
//! # The delivery role
//!
//! One thread at a time delivers a subject's values: the *drainer*. It takes the role, and the
//! listeners with it (the roster is moved out of the state), in the same critical section in
//! which it records its value; it calls the listeners with no lock held; then, in a second
//! critical section, it hands the roster back and either starts the next queued job or gives
//! the role up. A value recorded meanwhile (by another thread, or by a listener) is queued, in
//! the order the lock records it, and the drainer delivers it next.
//!
//! While the roster is out, listeners added or removed are recorded beside it, as pending
//! changes applied when it comes back. A removal also bumps a counter of removals, which the
//! drainer reads before each call, so it skips a listener removed during the delivery.
//!
//! On the uncontended path a value costs two short critical sections, one reference-count
//! increment and decrement (the drainer's hold on the value), and no allocation once the
//! subject has a value nobody else holds: the next value is written into that value's
//! allocation.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::num::NonZeroU64;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::stream::Streams;
pub use crate::stream::Watcher;
use crate::sync::{self, AtomicU64, Condvar, InCallback, Mutex, MutexGuard, Ordering, ThreadId};

/// A registered listener, type-erased.
type Listener<T> = Box<dyn Fn(&T) + Send + Sync>;

/// A caught panic payload.
pub(crate) type Payload = Box<dyn Any + Send>;

/// Identifies a listener registered with [`RawSubject::listen`]; give it back to
/// [`RawSubject::unlisten`] to remove the listener.
///
/// It is neither `Clone` nor `Copy`, so a listener is removed at most once.
#[must_use = "a listener stays registered until its id is given to `unlisten`"]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(NonZeroU64);

impl ListenerId {
    pub(crate) fn get(&self) -> u64 {
        self.0.get()
    }

    pub(crate) fn from_raw(id: u64) -> Option<Self> {
        NonZeroU64::new(id).map(Self)
    }
}

/// One registered listener.
struct Entry<T> {
    /// Registration number: the roster is sorted by it.
    id: u64,
    f: Listener<T>,
}

/// The registered listeners, in registration order. No listener and one listener, by far the
/// most common cases, need no allocation of their own.
enum Roster<T> {
    Empty,
    One(Entry<T>),
    Many(Vec<Entry<T>>),
}

impl<T> Roster<T> {
    fn as_slice(&self) -> &[Entry<T>] {
        match self {
            Self::Empty => &[],
            Self::One(entry) => std::slice::from_ref(entry),
            Self::Many(entries) => entries,
        }
    }

    /// Appends `entry`, whose id is larger than every id here.
    #[inline(always)]
    fn push(&mut self, entry: Entry<T>) {
        if let Self::Empty = self {
            // The first listener, by far the most common case: no move of the roster, and
            // nothing to drop (forgetting `Empty` leaks nothing).
            mem::forget(mem::replace(self, Self::One(entry)));
            return;
        }
        self.push_more(entry);
    }

    /// [`push`](Self::push) to a roster that is not empty.
    #[inline(never)]
    fn push_more(&mut self, entry: Entry<T>) {
        *self = match mem::take(self) {
            Self::Empty => Self::One(entry),
            Self::One(first) => Self::Many(vec![first, entry]),
            Self::Many(mut entries) => {
                entries.push(entry);
                Self::Many(entries)
            }
        };
    }

    /// Removes the listener `id`, if it is here.
    #[inline(always)]
    fn remove(&mut self, id: u64) -> Option<Entry<T>> {
        if let Self::One(entry) = self {
            // The only listener: no search, no move of the roster.
            if entry.id != id {
                return None;
            }
            return match mem::take(self) {
                Self::One(entry) => Some(entry),
                _ => None,
            };
        }
        self.remove_more(id)
    }

    /// [`remove`](Self::remove) from a roster that does not hold exactly one listener.
    #[inline(never)]
    fn remove_more(&mut self, id: u64) -> Option<Entry<T>> {
        let index = self
            .as_slice()
            .binary_search_by_key(&id, |entry| entry.id)
            .ok()?;
        match mem::take(self) {
            Self::Empty => None,
            Self::One(entry) => Some(entry),
            Self::Many(mut entries) => {
                let entry = entries.remove(index);
                *self = match entries.len() {
                    0 => Self::Empty,
                    1 => Self::One(entries.pop()?),
                    _ => Self::Many(entries),
                };
                Some(entry)
            }
        }
    }

    /// The listener `id`, if it is here.
    fn find(&self, id: u64) -> Option<&Entry<T>> {
        let entries = self.as_slice();
        let index = entries.binary_search_by_key(&id, |entry| entry.id).ok()?;
        entries.get(index)
    }

    /// Applies the changes made while the roster was out; returns the removed listeners, to be
    /// dropped without the lock.
    fn apply(&mut self, pending: Pending<T>) -> Vec<Entry<T>> {
        let Pending { mut added, removed } = pending;
        let removed = removed
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect();
        // Ids are handed out in order, but a listener registered from inside a listener is
        // recorded after its immediate call: restore the order.
        added.sort_unstable_by_key(|entry| entry.id);
        for entry in added {
            self.push(entry);
        }
        removed
    }
}

#[expect(
    clippy::derivable_impls,
    reason = "a derived impl would require `T: Default`"
)]
impl<T> Default for Roster<T> {
    fn default() -> Self {
        Self::Empty
    }
}

/// Listeners added and removed while the roster was out.
struct Pending<T> {
    added: Vec<Entry<T>>,
    removed: Vec<u64>,
}

/// Work waiting for the delivery role.
enum Job<T> {
    /// Deliver a value to every listener registered when the delivery starts.
    Deliver(Arc<T>),
    /// Give one listener, registered with `immediate` while another thread was delivering, the
    /// value whose delivery had already started.
    Replay(u64, Arc<T>),
}

/// Everything behind the subject's lock.
struct State<T> {
    /// The last recorded value.
    last: Option<Arc<T>>,
    /// The value being delivered, while it is not `last` (a newer value is queued behind it):
    /// what `immediate` replays. `None` when nothing is delivered, or when it is `last`.
    current: Option<Arc<T>>,
    /// The listeners; empty while the drainer holds them.
    roster: Roster<T>,
    /// The thread holding the delivery role (and the roster), if any.
    drainer: Option<ThreadId>,
    /// Changes to the roster made while it was out. Boxed: most subjects never need it.
    pending: Option<Box<Pending<T>>>,
    /// Jobs recorded but not yet started, in total order. Boxed, and only once needed: most
    /// subjects never queue.
    #[expect(
        clippy::box_collection,
        reason = "one word instead of four in every subject; the box is made on first contention"
    )]
    queue: Option<Box<VecDeque<Job<T>>>>,
    /// Id of the next listener.
    next_id: u64,
    /// Registered listeners, pending ones included.
    listeners: usize,
    /// Jobs started by the delivery role.
    started: u64,
    /// Jobs finished by the delivery role; `started - finished` is 0 or 1.
    finished: u64,
    /// Threads blocked in `unlisten` until the job in flight finishes.
    waiters: u32,
    /// Values recorded, the initial value included.
    version: u64,
    /// Set by [`RawSubject::close`].
    closed: bool,
    /// Set whenever one of the conditions [`is_quiet`](Self::is_quiet) checks may have stopped
    /// holding (a queued job, a pending change, a waiter, a replayable value, closing);
    /// cleared by the drainer once they all hold again. The uncontended delivery reads this
    /// one flag instead of the five conditions.
    attention: bool,
}

/// A value replaced by a newer one: dropped without the lock (its drop is user code).
enum Retired<T> {
    None,
    /// The value itself: its allocation now holds the newer value.
    Value(T),
    /// A shared value; dropping this reference may drop the value.
    Shared(Arc<T>),
}

impl<T> State<T> {
    /// Records `value` as the last value. Writes it into the last value's allocation when no
    /// delivery is under way and nobody else holds that value (no queue, reader or replay): a
    /// steady stream of values allocates nothing.
    ///
    /// While a delivery is under way the last value is kept even when nobody holds it (a replay
    /// that just ended dropped its hold): the new value is queued behind that delivery, and an
    /// `immediate` listener registered before it starts must be replayed the value before it
    /// (`current`), not be handed the queued value twice.
    fn record(&mut self, value: T) -> Retired<T> {
        self.version += 1;
        let Some(last) = &mut self.last else {
            self.last = Some(Arc::new(value));
            return Retired::None;
        };
        if self.drainer.is_none()
            && let Some(slot) = Arc::get_mut(last)
        {
            return Retired::Value(mem::replace(slot, value));
        }
        let previous = mem::replace(last, Arc::new(value));
        if self.drainer.is_some() && self.current.is_none() {
            // `previous` is the value being delivered: keep it for `immediate` replays.
            self.current = Some(previous);
            self.attention = true;
            Retired::None
        } else {
            Retired::Shared(previous)
        }
    }

    /// The value an `immediate` listener is first called with: the last whose delivery has
    /// started (which is `last` unless a newer value is queued).
    fn replay_value(&self) -> Option<Arc<T>> {
        self.current.as_ref().or(self.last.as_ref()).cloned()
    }

    /// Whether the drainer, done with a job, has nothing more to do: nothing queued, no
    /// listener added or removed meanwhile, no waiter, no replayable value to drop, not closed.
    #[inline]
    fn is_quiet(&self) -> bool {
        self.waiters == 0
            && self.pending.is_none()
            && self.current.is_none()
            && !self.closed
            && self.queue.as_ref().is_none_or(|queue| queue.is_empty())
    }

    /// Takes the roster back from the drainer, which gives up the role.
    #[inline]
    fn hand_back(&mut self, roster: Roster<T>) {
        let empty = mem::replace(&mut self.roster, roster);
        // The slot held nothing while the roster was out: forgetting it leaks nothing, and
        // skips a drop call on the hot path.
        debug_assert!(matches!(empty, Roster::Empty));
        mem::forget(empty);
        self.drainer = None;
    }

    fn pending(&mut self) -> &mut Pending<T> {
        self.attention = true;
        self.pending.get_or_insert_with(|| {
            Box::new(Pending {
                added: Vec::new(),
                removed: Vec::new(),
            })
        })
    }

    /// The queue of jobs, made on first use.
    fn queue(&mut self) -> &mut VecDeque<Job<T>> {
        self.attention = true;
        self.queue.get_or_insert_default()
    }

    /// Starts the next queued job, for the drainer; `None` when the queue is empty.
    fn start_next(&mut self) -> Option<Work<T>> {
        let job = self.queue.as_mut()?.pop_front()?;
        self.started += 1;
        self.attention = true;
        Some(match job {
            Job::Deliver(value) => {
                let is_last = self
                    .last
                    .as_ref()
                    .is_some_and(|last| Arc::ptr_eq(last, &value));
                // Retired here, and dropped by the drainer once the lock is released.
                let previous =
                    mem::replace(&mut self.current, (!is_last).then(|| Arc::clone(&value)));
                Work::Deliver(value, previous)
            }
            Job::Replay(id, value) => Work::Replay(id, value),
        })
    }
}

/// A job the drainer runs without the lock.
enum Work<T> {
    /// The value, and the value it replaced as `current` (to drop).
    Deliver(Arc<T>, Option<Arc<T>>),
    Replay(u64, Arc<T>),
}

/// A subject's state without the shared handle around it: what [`Subject`](crate::Subject) is
/// made of, for layers that keep a subject inside an allocation of their own (one allocation per
/// key instead of two).
///
/// It has every operation of a [`Subject`](crate::Subject), with the same guarantees, taking
/// `&self`; the difference is in the handles. A listener is identified by a [`ListenerId`] that
/// the owner gives back to [`unlisten`](Self::unlisten) (nothing is removed on drop), and a
/// stream is a [`Watcher`] polled with [`poll_watch`](Self::poll_watch) and given back to
/// [`unwatch`](Self::unwatch). Dropping a `RawSubject` drops its listeners; streams end after
/// [`close`](Self::close).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use keyrunner_subject::raw::RawSubject;
///
/// // A counter with its own subject, in one allocation.
/// struct Counter {
///     total: AtomicU32,
///     changes: RawSubject<u32>,
/// }
///
/// let counter = Arc::new(Counter { total: AtomicU32::new(0), changes: RawSubject::new() });
/// let seen = Arc::new(AtomicU32::new(0));
/// let sink = Arc::clone(&seen);
/// let id = counter.changes.listen(move |total: &u32| sink.store(*total, Ordering::Relaxed), false);
/// let total = counter.total.fetch_add(5, Ordering::Relaxed) + 5;
/// counter.changes.next(total);
/// assert_eq!(seen.load(Ordering::Relaxed), 5);
/// counter.changes.unlisten(id);
/// ```
pub struct RawSubject<T> {
    state: Mutex<State<T>>,
    /// Signalled when a job finishes while someone waits in `unlisten`.
    job_finished: Condvar,
    /// Bumped, under the lock, by every removal made while the roster is out; the drainer
    /// compares it with the value it saw before each call.
    removals: AtomicU64,
    /// Values recorded before the first emission: 1 with an initial value, else 0.
    base: u64,
    /// What the streams read without locking, and where they wait.
    streams: Streams,
}

impl<T> RawSubject<T> {
    /// A subject with no last value.
    pub fn new() -> Self {
        Self::from_value(None)
    }

    /// A subject whose last value is `value` (not an emission: no listener exists yet).
    pub fn with_value(value: T) -> Self {
        Self::from_value(Some(Arc::new(value)))
    }

    /// A subject whose last value is `value`, an `Arc` that may be shared, so that many subjects
    /// start from one value without copying it.
    pub fn with_shared_value(value: Arc<T>) -> Self {
        Self::from_value(Some(value))
    }

    fn from_value(value: Option<Arc<T>>) -> Self {
        let base = u64::from(value.is_some());
        Self {
            state: Mutex::new(State {
                last: value,
                current: None,
                roster: Roster::Empty,
                drainer: None,
                pending: None,
                queue: None,
                next_id: 1,
                listeners: 0,
                started: 0,
                finished: 0,
                waiters: 0,
                version: base,
                closed: false,
                attention: false,
            }),
            job_finished: Condvar::new(),
            removals: AtomicU64::new(0),
            base,
            streams: Streams::new(base),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        sync::lock(&self.state)
    }

    /// Registers `listener`; see [`Subject::listen`](crate::Subject::listen) for what it
    /// receives, and for `immediate`.
    ///
    /// # Panics
    ///
    /// As [`Subject::listen`](crate::Subject::listen); the new listener is then removed.
    pub fn listen<F>(&self, listener: F, immediate: bool) -> ListenerId
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let f: Listener<T> = Box::new(listener);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let listener_id = ListenerId(NonZeroU64::new(id).unwrap_or(NonZeroU64::MIN));
        if state.closed {
            drop(state);
            drop(f);
            return listener_id;
        }
        let replay = if immediate {
            state.replay_value()
        } else {
            None
        };
        let entry = Entry { id, f };
        match state.drainer {
            None => {
                state.roster.push(entry);
                state.listeners += 1;
                let Some(value) = replay else {
                    return listener_id;
                };
                // Nothing is queued when nobody delivers: take the role and replay first.
                let (roster, seen) = self.take_role(&mut state, sync::current_thread());
                drop(state);
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                    self.drain(roster, Work::Replay(id, value), seen, None);
                }));
                if let Err(payload) = outcome {
                    self.unlisten(listener_id);
                    panic::resume_unwind(payload);
                }
            }
            Some(drainer) if drainer == sync::current_thread() => {
                // Called from a listener: this thread delivers, and the roster is out. The
                // immediate call happens now; the listener joins the roster when it returns.
                drop(state);
                if let Some(value) = replay {
                    (entry.f)(&value);
                }
                let mut state = self.lock();
                if state.closed {
                    drop(state);
                    drop(entry);
                } else {
                    state.pending().added.push(entry);
                    state.listeners += 1;
                }
            }
            Some(_) => {
                state.pending().added.push(entry);
                state.listeners += 1;
                if let Some(value) = replay {
                    // Before the next delivery, after the replays already waiting.
                    let queue = state.queue();
                    let at = queue
                        .iter()
                        .position(|job| matches!(job, Job::Deliver(..)))
                        .unwrap_or(queue.len());
                    queue.insert(at, Job::Replay(id, value));
                }
            }
        }
        listener_id
    }

    /// Registers `listener` like [`listen`](Self::listen) without `immediate`, on a subject the
    /// caller holds exclusively (one being built, before anyone else can reach it): no lock
    /// is taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_subject::raw::RawSubject;
    ///
    /// let mut subject = RawSubject::new();
    /// let id = subject.listen_mut(|value: &u32| assert_eq!(*value, 1));
    /// subject.next(1);
    /// subject.unlisten(id);
    /// ```
    pub fn listen_mut<F>(&mut self, listener: F) -> ListenerId
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let state = sync::get_mut(&mut self.state);
        let id = state.next_id;
        state.next_id += 1;
        let listener_id = ListenerId(NonZeroU64::new(id).unwrap_or(NonZeroU64::MIN));
        if state.closed {
            return listener_id;
        }
        // Exclusive access: nobody delivers, so the roster is here.
        state.roster.push(Entry {
            id,
            f: Box::new(listener),
        });
        state.listeners += 1;
        listener_id
    }

    /// Removes the listener `id`. It is not called after this returns, with one exception:
    /// see [`Subscription`](crate::Subscription) for who waits and when.
    pub fn unlisten(&self, id: ListenerId) {
        let id = id.get();
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.drainer.is_none() {
            let removed = state.roster.remove(id);
            state.listeners -= usize::from(removed.is_some());
            drop(state);
            drop(removed);
            return;
        }
        // The roster is out with the drainer.
        let pending = state.pending();
        if let Some(at) = pending.added.iter().position(|entry| entry.id == id) {
            let removed = pending.added.remove(at);
            state.listeners -= 1;
            drop(state);
            drop(removed);
            return;
        }
        pending.removed.push(id);
        state.listeners -= 1;
        // Only lock holders write it: a plain increment.
        let removals = self.removals.load(Ordering::Relaxed) + 1;
        self.removals.store(removals, Ordering::Release);
        // The drainer may be calling this listener right now. Its own thread never waits (that
        // would deadlock): it reads the counter before every call. Nor does a thread inside
        // any callback (a listener of any subject, or a layer's initializer), since it may be
        // what the drainer waits for; every other thread waits for the job in flight.
        let me = sync::current_thread();
        if state.drainer != Some(me) && !sync::in_callback() {
            let target = state.started;
            state.waiters += 1;
            state.attention = true;
            while state.finished < target {
                state = sync::wait(&self.job_finished, state);
            }
            state.waiters -= 1;
        }
    }

    /// Records `value` as the last value and delivers it, as
    /// [`Subject::next`](crate::Subject::next); returns its emission number (1 for the first
    /// value recorded by `next` or `update`, the initial value not counted).
    ///
    /// # Panics
    ///
    /// As [`Subject::next`](crate::Subject::next).
    pub fn next(&self, value: T) -> u64 {
        let state = self.lock();
        self.emit(state, value)
    }

    /// Atomically computes the next value from the last one, as
    /// [`Subject::update`](crate::Subject::update).
    ///
    /// # Panics
    ///
    /// As [`Subject::update`](crate::Subject::update).
    pub fn update(&self, f: impl FnOnce(Option<&T>) -> Option<T>) -> bool {
        let state = self.lock();
        match f(state.last.as_deref()) {
            Some(value) => {
                self.emit(state, value);
                true
            }
            None => false,
        }
    }

    /// The last recorded value, if any.
    pub fn last(&self) -> Option<Arc<T>> {
        self.lock().last.clone()
    }

    /// Number of registered listeners.
    pub fn listener_count(&self) -> usize {
        self.lock().listeners
    }

    /// Number of values recorded by [`next`](Self::next) and [`update`](Self::update) so far.
    pub fn emissions(&self) -> u64 {
        self.streams.version() - self.base
    }

    /// Ends the subject: drops its listeners (and queued values), and lets every stream end once
    /// it has yielded the last value. Later values are still recorded (and read by
    /// [`last`](Self::last)), but reach no listener. Idempotent.
    ///
    /// Listeners are dropped here, or, if a delivery is under way, by the delivering thread
    /// once the listener it is calling returns.
    pub fn close(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        state.attention = true;
        state.listeners = 0;
        let roster = mem::take(&mut state.roster);
        let pending = state.pending.take();
        let queue = state.queue.take();
        let current = state.current.take();
        drop(state);
        // Streams first: they read only `last`, which stays, and a panicking drop below must
        // not leave them waiting.
        self.streams.close();
        // User closures and values are dropped without the lock.
        drop((roster, pending, queue, current));
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Registers a latest-value stream; poll it with [`poll_watch`](Self::poll_watch) and give
    /// it back to [`unwatch`](Self::unwatch).
    pub fn watch(&self) -> Watcher {
        let key = self.streams.insert();
        // Counted under the state lock: a publisher that records a value after this sees the
        // count and wakes the waiters; one that recorded before is seen by the stamp the
        // stream reads first.
        let state = self.lock();
        self.streams.count_stream();
        drop(state);
        Watcher::new(key)
    }

    /// Polls the stream `watcher` follows; see [`SubjectStream`](crate::SubjectStream) for what
    /// it yields.
    pub fn poll_watch(&self, watcher: &mut Watcher, cx: &mut Context<'_>) -> Poll<Option<T>>
    where
        T: Clone,
    {
        self.streams.poll(watcher, cx, |seen| self.latest(seen))
    }

    /// Unregisters the stream `watcher` follows.
    pub fn unwatch(&self, watcher: Watcher) {
        self.streams.remove(watcher);
    }

    /// The latest value, if its version is not `seen`, or whether the subject is closed.
    fn latest(&self, seen: u64) -> Result<(u64, Arc<T>), bool> {
        let state = self.lock();
        match &state.last {
            Some(value) if state.version != seen => Ok((state.version, Arc::clone(value))),
            _ => Err(state.closed),
        }
    }

    /// Takes the delivery role for the calling thread, with the roster; returns the roster and
    /// the removal count it starts from.
    fn take_role(&self, state: &mut State<T>, me: ThreadId) -> (Roster<T>, u64) {
        state.drainer = Some(me);
        state.started += 1;
        (
            mem::take(&mut state.roster),
            self.removals.load(Ordering::Relaxed),
        )
    }

    /// Records `value` and delivers it, or queues it for the thread that delivers.
    fn emit(&self, mut state: MutexGuard<'_, State<T>>, value: T) -> u64 {
        let retired = state.record(value);
        let version = state.version;
        self.streams.record(version);
        let value = state
            .last
            .clone()
            .expect("`record` just stored a last value");
        if state.drainer.is_some() {
            state.queue().push_back(Job::Deliver(value));
            drop(state);
            self.streams.wake();
            if let Some(payload) = retired.drop_caught() {
                panic::resume_unwind(payload);
            }
            return version - self.base;
        }
        // Nobody delivers, so nothing is queued: this thread takes the role and starts its value
        // in this same critical section, so no replay can slip in before it.
        let (roster, seen) = self.take_role(&mut state, sync::current_thread());
        drop(state);
        self.streams.wake();
        let mut first = retired.drop_caught();
        let in_callback = InCallback::enter();
        match &roster {
            // The common case, without the slice loop.
            Roster::One(entry) if self.removals.load(Ordering::Acquire) == seen => {
                call(entry, &value, &mut first);
            }
            roster => self.call_all(roster.as_slice(), &value, seen, &mut first),
        }
        // Usually not the last reference (`last` holds the value): then no user code runs.
        if let Some(payload) = Arc::into_inner(value).and_then(drop_caught) {
            keep_first(&mut first, payload);
        }
        let mut state = self.lock();
        state.finished += 1;
        if state.attention {
            self.finish(state, roster, &mut first);
        } else {
            debug_assert!(
                state.is_quiet(),
                "a change that needs the drainer sets `attention`"
            );
            state.hand_back(roster);
        }
        drop(in_callback);
        if let Some(payload) = first {
            panic::resume_unwind(payload);
        }
        version - self.base
    }

    /// The delivery role, held by the caller with `roster`: runs `work`, then the queued jobs,
    /// then hands the roster back and releases the role, and resumes the first panic caught
    /// (`first`, if given).
    fn drain(&self, roster: Roster<T>, work: Work<T>, seen: u64, mut first: Option<Payload>) {
        let in_callback = InCallback::enter();
        self.run(&roster, work, seen, &mut first);
        let mut state = self.lock();
        state.finished += 1;
        self.finish(state, roster, &mut first);
        drop(in_callback);
        if let Some(payload) = first {
            panic::resume_unwind(payload);
        }
    }

    /// Ends the job the drainer just ran (counted finished, under the lock `state`): hands the
    /// roster back and releases the role, or, if values were queued or the roster changed
    /// meanwhile, applies the changes and runs the next jobs first.
    #[cold]
    fn finish<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<T>>,
        mut roster: Roster<T>,
        first: &mut Option<Payload>,
    ) {
        loop {
            if state.waiters > 0 {
                self.job_finished.notify_all();
            }
            if state.is_quiet() {
                state.attention = false;
                state.hand_back(roster);
                return;
            }
            let removed = state.pending.take().map(|pending| roster.apply(*pending));
            let closed = state.closed.then(|| mem::take(&mut roster));
            let seen = self.removals.load(Ordering::Relaxed);
            let Some(work) = state.start_next() else {
                state.hand_back(roster);
                let current = state.current.take();
                state.attention = !state.is_quiet();
                drop(state);
                if let Some(payload) = drop_caught((removed, closed, current)) {
                    keep_first(first, payload);
                }
                return;
            };
            drop(state);
            if let Some(payload) = drop_caught((removed, closed)) {
                keep_first(first, payload);
            }
            self.run(&roster, work, seen, first);
            state = self.lock();
            state.finished += 1;
        }
    }

    /// Runs one job without the lock: calls its listeners, catching every panic, skipping those
    /// removed since it started (`seen` is the removal count then).
    fn run(&self, roster: &Roster<T>, work: Work<T>, seen: u64, first: &mut Option<Payload>) {
        let dropped = match work {
            Work::Deliver(value, previous) => {
                self.call_all(roster.as_slice(), &value, seen, first);
                drop_caught((value, previous))
            }
            Work::Replay(id, value) => {
                if let Some(entry) = roster.find(id) {
                    self.call_all(std::slice::from_ref(entry), &value, seen, first);
                }
                drop_caught(value)
            }
        };
        if let Some(payload) = dropped {
            keep_first(first, payload);
        }
    }

    /// Calls `entries` with `value`, as long as no listener was removed since the job started;
    /// then goes on with [`call_checked`](Self::call_checked).
    #[inline]
    fn call_all(&self, entries: &[Entry<T>], value: &T, seen: u64, first: &mut Option<Payload>) {
        for (at, entry) in entries.iter().enumerate() {
            if self.removals.load(Ordering::Acquire) != seen {
                self.call_checked(&entries[at..], value, first);
                return;
            }
            call(entry, value, first);
        }
    }

    /// Calls `entries` with `value`, skipping those removed while the roster is out.
    #[cold]
    fn call_checked(&self, entries: &[Entry<T>], value: &T, first: &mut Option<Payload>) {
        let mut seen = None;
        let mut removed: Vec<u64> = Vec::new();
        for entry in entries {
            let now = self.removals.load(Ordering::Acquire);
            if seen != Some(now) {
                seen = Some(now);
                removed = self
                    .lock()
                    .pending
                    .as_ref()
                    .map(|pending| pending.removed.clone())
                    .unwrap_or_default();
            }
            if !removed.contains(&entry.id) {
                call(entry, value, first);
            }
        }
    }
}

/// Calls one listener, catching a panic.
#[inline]
fn call<T>(entry: &Entry<T>, value: &T, first: &mut Option<Payload>) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| (entry.f)(value))) {
        keep_first(first, payload);
    }
}

impl<T> Retired<T> {
    /// Drops the retired value without the lock, catching a panic.
    fn drop_caught(self) -> Option<Payload> {
        match self {
            Self::None => None,
            Self::Value(value) => drop_caught(value),
            Self::Shared(value) => drop_caught(value),
        }
    }
}

impl<T> Default for RawSubject<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for RawSubject<T> {
    /// Prints counts, or `<locked>` while another thread holds the lock; never blocks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_as("RawSubject", f)
    }
}

impl<T> RawSubject<T> {
    /// `Debug` under the name of the type that shows it.
    pub(crate) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct(name);
        match sync::try_lock(&self.state) {
            Some(state) => out
                .field("listeners", &state.listeners)
                .field("has_value", &state.last.is_some())
                .field("delivering", &state.drainer.is_some())
                .field(
                    "queued",
                    &state.queue.as_ref().map_or(0, |queue| queue.len()),
                ),
            None => out.field("state", &format_args!("<locked>")),
        };
        out.finish_non_exhaustive()
    }
}

/// Runs `f` as a callback that other threads may be waiting for: a listener removed inside it
/// (with [`RawSubject::unlisten`] or by dropping a [`Subscription`](crate::Subscription)) does
/// not wait for a delivery under way on another thread.
///
/// Deliveries mark their listeners' calls this way already. A layer whose own callbacks make
/// other threads wait (a registry initializer, which callers of its key wait for) wraps them in
/// this, so that no wait can close a cycle: a thread that is waited for never waits in
/// `unlisten`.
///
/// # Examples
///
/// ```
/// use keyrunner_subject::raw::callback_scope;
///
/// let value = callback_scope(|| 40 + 2);
/// assert_eq!(value, 42);
/// ```
pub fn callback_scope<R>(f: impl FnOnce() -> R) -> R {
    let _in_callback = InCallback::enter();
    f()
}

/// Keeps the first panic payload of a delivery; later ones are discarded.
fn keep_first(first: &mut Option<Payload>, payload: Payload) {
    match first {
        None => *first = Some(payload),
        Some(_) => discard(payload),
    }
}

/// Drops `value`, which may run user code, catching a panic.
fn drop_caught<V>(value: V) -> Option<Payload> {
    if !mem::needs_drop::<V>() {
        return None;
    }
    panic::catch_unwind(AssertUnwindSafe(|| drop(value))).err()
}

/// Drops a payload nobody will see. One whose destructor panics is leaked instead: unwinding
/// here would leave the delivery role taken and the subject wedged.
pub(crate) fn discard(payload: Payload) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        mem::forget(again);
    }
}
