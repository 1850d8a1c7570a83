//! The subject: its shared state, the delivery role and the drain loop.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Weak};

use crate::stream::{Streams, SubjectStream};
use crate::subscription::{Subscription, Unsubscribe};
use crate::sync::{self, AtomicBool, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, ThreadId};

/// A registered listener, type-erased.
type Listener<T> = Box<dyn Fn(&T) + Send + Sync>;

/// A caught panic payload.
type Payload = Box<dyn Any + Send>;

/// One registered listener.
struct Entry<T> {
    /// Registration number: entries are kept sorted by it.
    id: u64,
    /// Cleared (under the state lock) when the listener is removed; checked before every call.
    active: AtomicBool,
    /// The listener itself.
    f: Listener<T>,
}

/// The registered listeners, in registration order: a copy-on-write snapshot that a delivery
/// clones in O(1). No listener and one listener, by far the most common cases, need no array.
enum Listeners<T> {
    None,
    One(Arc<Entry<T>>),
    Many(Arc<[Arc<Entry<T>>]>),
}

impl<T> Listeners<T> {
    fn as_slice(&self) -> &[Arc<Entry<T>>] {
        match self {
            Self::None => &[],
            Self::One(entry) => std::slice::from_ref(entry),
            Self::Many(entries) => entries,
        }
    }

    /// The listeners followed by `entry`.
    fn with(&self, entry: Arc<Entry<T>>) -> Self {
        match self {
            Self::None => Self::One(entry),
            listeners => Self::Many(
                listeners
                    .as_slice()
                    .iter()
                    .cloned()
                    .chain([entry])
                    .collect(),
            ),
        }
    }

    /// The listeners without the one at `index`.
    fn without(&self, index: usize) -> Self {
        let entries = self.as_slice();
        match entries.len() {
            0 | 1 => Self::None,
            2 => Self::One(Arc::clone(&entries[1 - index])),
            _ => Self::Many(
                entries[..index]
                    .iter()
                    .chain(&entries[index + 1..])
                    .cloned()
                    .collect(),
            ),
        }
    }
}

impl<T> Clone for Listeners<T> {
    fn clone(&self) -> Self {
        match self {
            Self::None => Self::None,
            Self::One(entry) => Self::One(Arc::clone(entry)),
            Self::Many(entries) => Self::Many(Arc::clone(entries)),
        }
    }
}

/// Work waiting for the delivery role.
enum Job<T> {
    /// Deliver a value to every listener registered when the delivery starts.
    Deliver(Arc<T>),
    /// Give one listener, registered with `immediate` while another thread was delivering, the
    /// value whose delivery had already started.
    Replay(Arc<Entry<T>>, Arc<T>),
}

/// Everything behind the subject's lock.
pub(crate) struct State<T> {
    /// The listeners, in registration order.
    listeners: Listeners<T>,
    /// Id of the next listener.
    next_id: u64,
    /// The last recorded value: what [`Subject::last`] returns and `update` decides from.
    pub(crate) last: Option<Arc<T>>,
    /// The last value whose delivery has started: what `immediate` replays.
    current: Option<Arc<T>>,
    /// Set by [`Subject::reuse_values`]: empties a retired value's allocation for reuse.
    reset: Option<fn(&mut T) -> T>,
    /// A retired value's allocation, holding a placeholder, ready for the next value; never
    /// shared.
    spare: Option<Arc<T>>,
    /// Jobs recorded but not yet started, in total order.
    /// Boxed, and only once needed: most subjects never queue, and every key of a repository
    /// has a subject.
    #[expect(
        clippy::box_collection,
        reason = "one word instead of four in every subject; the box is made on first contention"
    )]
    queue: Option<Box<VecDeque<Job<T>>>>,
    /// The thread holding the delivery role, if any.
    drainer: Option<ThreadId>,
    /// Jobs started by the delivery role.
    started: u64,
    /// Jobs finished by the delivery role; `started - finished` is 0 or 1.
    finished: u64,
    /// Threads blocked in an unsubscribe until the in-flight job finishes.
    waiters: u32,
    /// Bumped by every recorded value (the initial value counts as 1).
    pub(crate) version: u64,
    /// Set when the last [`Subject`] handle is dropped.
    pub(crate) closed: bool,
}

impl<T> State<T> {
    /// Puts `value` in the spare allocation if there is one, returning the placeholder it held
    /// (to be dropped outside the lock); otherwise allocates.
    fn wrap(&mut self, value: T) -> (Arc<T>, Option<T>) {
        if let Some(mut spare) = self.spare.take()
            && let Some(slot) = Arc::get_mut(&mut spare)
        {
            let placeholder = mem::replace(slot, value);
            return (spare, Some(placeholder));
        }
        (Arc::new(value), None)
    }
}

/// The shared part of a subject: what handles, subscriptions and streams point to.
pub(crate) struct Inner<T> {
    pub(crate) state: Mutex<State<T>>,
    /// Signalled when a job finishes while someone waits to unsubscribe.
    job_finished: Condvar,
    /// What the streams read without locking, and where they wait; woken when a value is
    /// recorded and on close.
    pub(crate) streams: Streams,
    /// Live [`Subject`] handles; the subject closes when it reaches zero.
    handles: AtomicUsize,
    /// Mirrors `State::reset.is_some()`, so that `next` knows without the lock whether to
    /// allocate before taking it.
    reuses: AtomicBool,
}

impl<T> Inner<T> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<T>> {
        sync::lock(&self.state)
    }

    /// Marks the subject closed, drops its listeners and wakes every stream.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let listeners = mem::replace(&mut state.listeners, Listeners::None);
        let queue = mem::take(&mut state.queue);
        let current = state.current.take();
        let spare = state.spare.take();
        drop(state);
        // Streams first: they read only `last`, which stays, and a panicking drop below must
        // not leave them waiting.
        self.streams.close();
        // User closures and values are dropped outside the lock.
        drop((listeners, queue, current, spare));
    }
}

impl<T: Send + Sync + 'static> Unsubscribe for Inner<T> {
    fn unsubscribe(&self, id: u64) {
        let mut state = self.lock();
        let entries = state.listeners.as_slice();
        let Ok(index) = entries.binary_search_by_key(&id, |entry| entry.id) else {
            return;
        };
        let removed = Arc::clone(&entries[index]);
        let rest = state.listeners.without(index);
        let old = mem::replace(&mut state.listeners, rest);
        removed.active.store(false, Ordering::Release);
        // Another thread may be calling this very listener right now: wait for the job in
        // flight to finish. The delivery role's own thread never waits (that would deadlock):
        // the cleared flag is enough, since it checks the flag before every call.
        let me = sync::current_thread();
        if state.drainer.is_some_and(|drainer| drainer != me) && state.started != state.finished {
            let target = state.started;
            state.waiters += 1;
            while state.finished < target {
                state = sync::wait(&self.job_finished, state);
            }
            state.waiters -= 1;
        }
        drop(state);
        drop((old, removed));
    }
}

/// What one job does once the lock is released.
enum Work<T> {
    Deliver {
        listeners: Listeners<T>,
        value: Arc<T>,
        previous: Option<Arc<T>>,
        reset: Option<fn(&mut T) -> T>,
    },
    Replay(Arc<Entry<T>>, Arc<T>),
}

impl<T> Work<T> {
    /// Calls the listeners, catching every panic; returns the first payload, and the retired
    /// value's allocation, emptied, if it is to be reused.
    fn run(self) -> (Option<Payload>, Option<Arc<T>>) {
        let mut first: Option<Payload> = None;
        let mut spare = None;
        let mut record = |payload: Payload| keep_first(&mut first, payload);
        let call = |entry: &Entry<T>, value: &T| {
            if entry.active.load(Ordering::Acquire) {
                panic::catch_unwind(AssertUnwindSafe(|| (entry.f)(value))).err()
            } else {
                None
            }
        };
        // The outer catch covers the drops at the end of the closure (values, listeners), which
        // run user code too.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| match self {
            Work::Deliver {
                listeners,
                value,
                previous,
                reset,
            } => {
                for entry in listeners.as_slice() {
                    if let Some(payload) = call(entry, &value) {
                        record(payload);
                    }
                }
                drop((listeners, value));
                // The value this one replaced is retired: if nothing else holds it, keep its
                // allocation, emptied here (its drop is user code), for a later value.
                if let (Some(mut previous), Some(reset)) = (previous, reset)
                    && let Some(retired) = Arc::get_mut(&mut previous)
                {
                    drop(reset(retired));
                    spare = Some(previous);
                }
            }
            Work::Replay(entry, value) => {
                if let Some(payload) = call(&entry, &value) {
                    record(payload);
                }
                drop((entry, value));
            }
        }));
        if let Err(payload) = outcome {
            record(payload);
        }
        (first, spare)
    }
}

/// A multicast emitter that remembers its last value (a "behaviour subject").
///
/// Listeners registered with [`listen`](Self::listen) receive every value passed to
/// [`next`](Self::next) or emitted by [`update`](Self::update), by reference, in one total
/// order; [`last`](Self::last) reads the last value; [`stream`](Self::stream) follows the latest
/// value asynchronously. The [crate documentation](crate) states the guarantees.
///
/// Cloning is cheap: clones share one subject. When the last clone is dropped the subject closes:
/// its listeners are dropped and its streams end after yielding the value they have not seen.
/// A listener that owns a clone of its own subject keeps it open.
///
/// `Subject<T>` is `Send` and `Sync` when `T` is. Its values are shared with listeners on
/// other threads, so they must be `Send + Sync`; this will **not** work:
///
/// ```compile_fail
/// let subject = keyrunner_subject::Subject::new();
/// subject.next(std::rc::Rc::new(1));
/// ```
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use keyrunner_subject::Subject;
///
/// let subject = Subject::with_value(1);
/// let seen = Arc::new(Mutex::new(Vec::new()));
///
/// let sink = Arc::clone(&seen);
/// let subscription = subject.listen(move |value: &i32| sink.lock().unwrap().push(*value), true);
/// subject.next(2);
/// subscription.unsubscribe();
/// subject.next(3);
///
/// assert_eq!(*seen.lock().unwrap(), [1, 2]);
/// assert_eq!(subject.last().as_deref(), Some(&3));
/// ```
pub struct Subject<T> {
    inner: Arc<Inner<T>>,
}

impl<T: Send + Sync + 'static> Subject<T> {
    /// Creates a subject with no last value.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::<u32>::new();
    /// assert!(subject.last().is_none());
    /// ```
    pub fn new() -> Self {
        Self::from_value(None)
    }

    /// Creates a subject whose last value is `value`.
    ///
    /// This is not an emission: no listener exists yet to receive it, but `immediate` listeners
    /// and new streams start from it.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::with_value("ready");
    /// assert_eq!(subject.last().as_deref(), Some(&"ready"));
    /// ```
    pub fn with_value(value: T) -> Self {
        Self::from_value(Some(Arc::new(value)))
    }

    /// Creates a subject whose last value is `value`, an `Arc` that may be shared: with
    /// [`with_value`](Self::with_value), but without allocating, so many subjects can start from
    /// one value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keyrunner_subject::Subject;
    ///
    /// let idle = Arc::new("idle");
    /// let a = Subject::with_shared_value(Arc::clone(&idle));
    /// let b = Subject::with_shared_value(Arc::clone(&idle));
    /// assert!(Arc::ptr_eq(&a.last().unwrap(), &b.last().unwrap()));
    /// ```
    pub fn with_shared_value(value: Arc<T>) -> Self {
        Self::from_value(Some(value))
    }

    /// From now on, reuses the allocation of a retired value for a later one, so that a steady
    /// stream of values allocates nothing.
    ///
    /// Every value lives in its own shared allocation (listeners on other threads read it while
    /// newer values are recorded, and [`last`](Self::last) hands it out). Once a value has been
    /// replaced and delivered, and nothing else holds it (no `last()` result, no replay, no
    /// stream reading it), its allocation is kept for the next value, holding `T::default()`
    /// meanwhile: the retired value itself is dropped at once, as without reuse. The cost is
    /// one allocation of one `T` kept per subject. (Should dropping that `T::default()` panic,
    /// the `next` or `update` that reused it resumes the panic after delivering, as it would a
    /// listener's.)
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use keyrunner_subject::Subject;
    ///
    /// let subject = Subject::<u64>::new();
    /// subject.reuse_values();
    /// let total = Arc::new(AtomicU64::new(0));
    /// let sum = Arc::clone(&total);
    /// let _subscription = subject.listen(move |value| { sum.fetch_add(*value, Ordering::Relaxed); }, false);
    /// for value in 1..=100 {
    ///     subject.next(value);
    /// }
    /// assert_eq!(total.load(Ordering::Relaxed), 5050);
    /// assert_eq!(subject.last().as_deref(), Some(&100));
    /// ```
    pub fn reuse_values(&self)
    where
        T: Default,
    {
        self.inner.lock().reset = Some(mem::take::<T>);
        self.inner.reuses.store(true, Ordering::Relaxed);
    }

    fn from_value(value: Option<Arc<T>>) -> Self {
        let state = State {
            listeners: Listeners::None,
            next_id: 0,
            version: u64::from(value.is_some()),
            current: value.clone(),
            last: value,
            reset: None,
            spare: None,
            queue: None,
            drainer: None,
            started: 0,
            finished: 0,
            waiters: 0,
            closed: false,
        };
        let streams = Streams::new(state.version);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                job_finished: Condvar::new(),
                streams,
                handles: AtomicUsize::new(1),
                reuses: AtomicBool::new(false),
            }),
        }
    }

    /// Registers `listener`; dropping the returned [`Subscription`] removes it.
    ///
    /// The listener receives every value whose delivery starts after this call, in order. It
    /// does not receive a value whose delivery is already under way.
    ///
    /// With `immediate`, the listener is first called with the last value whose delivery has
    /// started (or the initial value), if there is one, and then with every later value; it never
    /// sees a value twice or out of order:
    ///
    /// - if no emission is under way, the call happens on this thread before `listen` returns;
    /// - if `listen` is called from inside a listener of this subject, likewise;
    /// - if another thread is delivering, that thread makes the call, before the listener's next
    ///   value; it may happen after `listen` returns.
    ///
    /// # Panics
    ///
    /// When this call delivers (first case above), it resumes the first panic of a listener
    /// called meanwhile, as [`next`](Self::next) does; the subscription is then dropped during
    /// unwinding, which removes the new listener.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use keyrunner_subject::Subject;
    ///
    /// let subject = Subject::with_value(5);
    /// let total = Arc::new(AtomicU32::new(0));
    /// let sum = Arc::clone(&total);
    /// let _subscription = subject.listen(
    ///     move |value: &u32| {
    ///         sum.fetch_add(*value, Ordering::Relaxed);
    ///     },
    ///     true,
    /// );
    /// subject.next(10);
    /// assert_eq!(total.load(Ordering::Relaxed), 15);
    /// ```
    pub fn listen<F>(&self, listener: F, immediate: bool) -> Subscription
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let f: Listener<T> = Box::new(listener);
        let mut state = self.inner.lock();
        let id = state.next_id;
        state.next_id += 1;
        let entry = Arc::new(Entry {
            id,
            active: AtomicBool::new(true),
            f,
        });
        let listeners = state.listeners.with(Arc::clone(&entry));
        let old = mem::replace(&mut state.listeners, listeners);
        let weak: Weak<Inner<T>> = Arc::downgrade(&self.inner);
        let subscription = Subscription::new(weak, id);

        let replay = if immediate {
            state.current.clone()
        } else {
            None
        };
        let Some(value) = replay else {
            drop(state);
            drop(old);
            return subscription;
        };
        let me = sync::current_thread();
        match state.drainer {
            None => {
                // Nothing is queued when nobody delivers: take the role and replay first.
                state.drainer = Some(me);
                let work = start(&mut state, Job::Replay(entry, value));
                drop(state);
                drop(old);
                self.drain(work, None);
            }
            Some(drainer) if drainer == me => {
                // Called from a listener: this thread delivers, and the snapshots of the values
                // after `current` already contain the new entry.
                drop(state);
                drop(old);
                (entry.f)(&value);
            }
            Some(_) => {
                // Before the next delivery, after the replays already waiting (same value).
                let queue = state.queue.get_or_insert_default();
                let at = queue
                    .iter()
                    .position(|job| matches!(job, Job::Deliver(..)))
                    .unwrap_or(queue.len());
                queue.insert(at, Job::Replay(entry, value));
                drop(state);
                drop(old);
            }
        }
        subscription
    }

    /// Records `value` as the last value and delivers it, by reference, to every listener
    /// registered when its delivery starts, in registration order.
    ///
    /// If no delivery is under way, this thread delivers the value before returning, and then
    /// every value other threads recorded meanwhile. Otherwise the value is queued and `next`
    /// returns at once: the thread already delivering (another one, or this one if `next` is
    /// called from a listener) delivers it after the values recorded before it, once the current
    /// value has reached every listener.
    ///
    /// # Panics
    ///
    /// If this call delivered and a listener panicked, the first such panic is resumed here,
    /// after every listener received its value and the delivery role was released; later panics
    /// of the same call are dropped. The subject stays fully usable.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::new();
    /// subject.next(String::from("hello"));
    /// assert_eq!(subject.last().as_deref().map(String::as_str), Some("hello"));
    /// ```
    pub fn next(&self, value: T) {
        let (state, value, placeholder) = if self.inner.reuses.load(Ordering::Relaxed) {
            let mut state = self.inner.lock();
            let (value, placeholder) = state.wrap(value);
            (state, value, placeholder)
        } else {
            // Allocated before the lock is taken: the critical section stays short.
            let value = Arc::new(value);
            (self.inner.lock(), value, None)
        };
        self.emit(state, value, placeholder);
    }

    /// Atomically computes the next value from the last one.
    ///
    /// `f` runs under the subject's lock with the last recorded value; if it returns `Some(v)`,
    /// `v` is emitted exactly as by [`next`](Self::next) (same ordering, same delivery) and
    /// `update` returns `true`. Two racing `update`s therefore see each other's values: this is
    /// a compare-and-set.
    ///
    /// `f` must not call into this subject (that deadlocks). A panic in `f` propagates from
    /// `update` and leaves the subject unchanged.
    ///
    /// # Panics
    ///
    /// Resumes a listener's panic as [`next`](Self::next) does.
    ///
    /// # Examples
    ///
    /// ```
    /// #[derive(Debug, PartialEq)]
    /// enum Phase { Idle, Running }
    ///
    /// let subject = keyrunner_subject::Subject::with_value(Phase::Idle);
    /// let start = |last: Option<&Phase>| (last == Some(&Phase::Idle)).then_some(Phase::Running);
    /// assert!(subject.update(start));
    /// assert!(!subject.update(start));
    /// assert_eq!(subject.last().as_deref(), Some(&Phase::Running));
    /// ```
    pub fn update(&self, f: impl FnOnce(Option<&T>) -> Option<T>) -> bool {
        let mut state = self.inner.lock();
        match f(state.last.as_deref()) {
            Some(value) => {
                let (value, placeholder) = state.wrap(value);
                self.emit(state, value, placeholder);
                true
            }
            None => false,
        }
    }

    /// Returns the last recorded value, if any.
    ///
    /// A value is recorded when `next` or `update` is called, before it is delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::new();
    /// assert_eq!(subject.last(), None);
    /// subject.next(7);
    /// assert_eq!(subject.last().as_deref(), Some(&7));
    /// ```
    pub fn last(&self) -> Option<Arc<T>> {
        self.inner.lock().last.clone()
    }

    /// Returns the number of registered listeners.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::<()>::new();
    /// let subscription = subject.listen(|_| {}, false);
    /// assert_eq!(subject.listener_count(), 1);
    /// drop(subscription);
    /// assert_eq!(subject.listener_count(), 0);
    /// ```
    pub fn listener_count(&self) -> usize {
        self.inner.lock().listeners.as_slice().len()
    }

    /// Returns a stream of the latest value; see [`SubjectStream`].
    ///
    /// Its first item is the last value, if there is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::executor::block_on;
    /// use futures::StreamExt;
    ///
    /// let subject = keyrunner_subject::Subject::with_value(1);
    /// let mut stream = subject.stream();
    /// subject.next(2);
    /// subject.next(3);
    /// assert_eq!(block_on(stream.next()), Some(3));
    /// drop(subject);
    /// assert_eq!(block_on(stream.next()), None);
    /// ```
    pub fn stream(&self) -> SubjectStream<T>
    where
        T: Clone,
    {
        SubjectStream::new(Arc::clone(&self.inner))
    }

    /// Records `value` and delivers it, or queues it for the thread that delivers.
    fn emit(&self, mut state: MutexGuard<'_, State<T>>, value: Arc<T>, placeholder: Option<T>) {
        let previous = state.last.replace(Arc::clone(&value));
        state.version += 1;
        self.inner.streams.record(state.version);
        // Nobody delivers, so nothing is queued: this thread takes the role and starts its
        // value at once, under this same lock, so no replay can slip in before it.
        let work = if state.drainer.is_none() {
            state.drainer = Some(sync::current_thread());
            Some(start(&mut state, Job::Deliver(value)))
        } else {
            state
                .queue
                .get_or_insert_default()
                .push_back(Job::Deliver(value));
            None
        };
        drop(state);
        // Never the last reference: a recorded value stays in `current` or in the queue until a
        // later value replaces it there, so this drop runs no user code.
        drop(previous);
        self.inner.wake_streams();
        // The placeholder a reused allocation held: its drop is user code, so it runs unlocked
        // and a panic in it is caught, then resumed like a listener's.
        let panic = placeholder.and_then(|placeholder| {
            panic::catch_unwind(AssertUnwindSafe(|| drop(placeholder))).err()
        });
        match (work, panic) {
            (Some(work), panic) => self.drain(work, panic),
            (None, Some(panic)) => panic::resume_unwind(panic),
            (None, None) => {}
        }
    }

    /// The delivery role, held by the caller: runs `work`, then the queued jobs until the queue
    /// is empty, then releases the role and resumes the first panic caught (`first`, if given).
    fn drain(&self, mut work: Work<T>, mut first: Option<Payload>) {
        let mut record = |payload: Payload| keep_first(&mut first, payload);
        // At most one spare is kept; a second one (values queued back to back) is dropped
        // outside the lock, its placeholder's drop being user code.
        let mut extra: Option<Arc<T>> = None;
        loop {
            let (payload, spare) = work.run();
            if let Some(payload) = payload {
                record(payload);
            }
            if let Some(payload) = drop_caught(extra.take()) {
                record(payload);
            }
            let mut state = self.inner.lock();
            state.finished += 1;
            extra = match spare {
                Some(spare) if state.spare.is_none() => {
                    state.spare = Some(spare);
                    None
                }
                extra => extra,
            };
            if state.waiters > 0 {
                self.inner.job_finished.notify_all();
            }
            match state.queue.as_mut().and_then(|queue| queue.pop_front()) {
                Some(job) => work = start(&mut state, job),
                None => {
                    state.drainer = None;
                    break;
                }
            }
        }
        if let Some(payload) = drop_caught(extra) {
            record(payload);
        }
        if let Some(payload) = first {
            panic::resume_unwind(payload);
        }
    }
}

/// Keeps the first panic payload of a delivery; later ones are discarded.
fn keep_first(first: &mut Option<Payload>, payload: Payload) {
    match first {
        None => *first = Some(payload),
        Some(_) => discard(payload),
    }
}

/// Drops `value`, which may run user code, catching a panic.
fn drop_caught<V>(value: Option<V>) -> Option<Payload> {
    let value = value?;
    panic::catch_unwind(AssertUnwindSafe(|| drop(value))).err()
}

/// Starts `job` for the thread holding the delivery role; runs under the lock, so the job's
/// listener snapshot and `current` change in the same step as its place in the order.
fn start<T>(state: &mut State<T>, job: Job<T>) -> Work<T> {
    state.started += 1;
    match job {
        Job::Deliver(value) => Work::Deliver {
            listeners: state.listeners.clone(),
            previous: state.current.replace(Arc::clone(&value)),
            value,
            reset: state.reset,
        },
        Job::Replay(entry, value) => Work::Replay(entry, value),
    }
}

impl<T: Send + Sync + 'static> Default for Subject<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Subject<T> {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Drop for Subject<T> {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.close();
        }
    }
}

impl<T> fmt::Debug for Subject<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Subject");
        match sync::try_lock(&self.inner.state) {
            Some(state) => out
                .field("listeners", &state.listeners.as_slice().len())
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

/// Drops a payload nobody will see. One whose destructor panics is leaked instead: unwinding
/// here would leave the delivery role taken and the subject wedged.
pub(crate) fn discard(payload: Payload) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        mem::forget(again);
    }
}
