//! [`PubSub`], the keyed registry of subjects, and its [`Builder`].

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use keyrunner_resource_registry::{Entry, Lease, Registry};
use keyrunner_subject::raw::{RawSubject, callback_scope};

use crate::topic::{Subscription, Topic, TopicStream};

/// Computes the value a topic starts with when its key is allocated.
type InitialValueFn<K, V> = dyn Fn(&K) -> Option<V> + Send + Sync;
/// Where a topic's first value comes from.
enum Initial<K, V> {
    /// Computed for each key when it is allocated.
    PerKey(Arc<InitialValueFn<K, V>>),
    /// One value every key starts from, shared by all of them.
    Shared(Arc<V>),
}

impl<K, V> Initial<K, V> {
    fn for_key(&self, key: &K) -> Option<Arc<V>> {
        match self {
            Self::PerKey(f) => f(key).map(Arc::new),
            Self::Shared(value) => Some(Arc::clone(value)),
        }
    }

    /// A fresh topic's subject, inside the registry's initializer. Callers of the key wait for
    /// it, so `f` runs as a callback: a listener it removes does not wait for a delivery.
    fn subject_for(&self, key: &K) -> RawSubject<V> {
        match self {
            Self::PerKey(f) => match callback_scope(|| f(key)) {
                Some(value) => RawSubject::with_value(value),
                None => RawSubject::new(),
            },
            Self::Shared(value) => RawSubject::with_shared_value(Arc::clone(value)),
        }
    }
}

impl<K, V> Clone for Initial<K, V> {
    fn clone(&self) -> Self {
        match self {
            Self::PerKey(f) => Self::PerKey(Arc::clone(f)),
            Self::Shared(value) => Self::Shared(Arc::clone(value)),
        }
    }
}

/// `true` means "forget the key once nobody holds it".
type ShouldCleanupFn<K, V> = dyn Fn(&K, &V) -> bool + Send + Sync;

/// Keyed subjects living in a resource registry: one [`Subject`] per key, allocated while
/// someone holds the key and forgotten afterwards.
///
/// A key is *allocated* while a [`Subscription`], [`Topic`] or [`TopicStream`] for it is alive,
/// and afterwards for as long as the [`should_cleanup`](Builder::should_cleanup) predicate says
/// "keep". While it is allocated, every handle of the key shares one subject, so listeners of the
/// key see one total order of values. Once the key is freed, its subject and last value are
/// gone; the next allocation starts again from the [`initial_value`](Builder::initial_value).
///
/// Cheap to clone: clones share one registry. `Send + Sync` when `K` and `V` are.
///
/// See the [crate documentation](crate) for the guarantees.
///
/// # Examples
///
/// ```
/// use keyrunner_pub_sub::PubSub;
/// use std::sync::{Arc, Mutex};
///
/// let progress: PubSub<&'static str, u32> = PubSub::new();
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let subscription = progress.listen("build-main", move |p: &u32| sink.lock().unwrap().push(*p), false);
/// assert!(progress.is_allocated("build-main"));
///
/// progress.next("build-main", 10);
/// progress.next("build-main", 60);
/// progress.next("build-dev", 99); // nobody listens: dropped, nothing allocated
///
/// assert_eq!(*seen.lock().unwrap(), [10, 60]);
/// assert_eq!(progress.last(&"build-main").as_deref(), Some(&60));
/// assert!(!progress.is_allocated("build-dev"));
///
/// drop(subscription); // the last holder leaves: the key is forgotten
/// assert!(progress.is_empty());
/// ```
///
/// [`Subject`]: keyrunner_subject::Subject
pub struct PubSub<K, V, S = RandomState> {
    registry: Registry<K, RawSubject<V>, S>,
    initial_value: Option<Initial<K, V>>,
    should_cleanup: Option<Arc<ShouldCleanupFn<K, V>>>,
}

impl<K, V> PubSub<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A pub-sub whose topics start empty and are forgotten as soon as nobody holds them.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_pub_sub::PubSub;
    ///
    /// let topics: PubSub<u64, String> = PubSub::new();
    /// assert!(topics.is_empty());
    /// assert_eq!(topics.last(&7), None);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A [`Builder`] to set an initial value, a cleanup predicate or a hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_pub_sub::PubSub;
    ///
    /// let scores = PubSub::<String, i64>::builder()
    ///     .initial_value(|_key| Some(0))
    ///     .should_cleanup(|_key, score| *score == 0)
    ///     .build();
    ///
    /// assert_eq!(scores.last(&"alice".to_owned()).as_deref(), Some(&0));
    /// scores.next("alice".to_owned(), 3); // non-zero: kept with nobody listening
    /// assert!(scores.is_allocated("alice"));
    /// ```
    #[must_use]
    pub fn builder() -> Builder<K, V> {
        Builder {
            initial_value: None,
            should_cleanup: None,
            hasher: RandomState::new(),
        }
    }
}

impl<K, V> Default for PubSub<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, S> PubSub<K, V, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// Registers `listener` on `key`'s topic, allocating the key if needed; with `immediate`,
    /// the listener is first called with the topic's last value (or its initial value), if any.
    ///
    /// The returned [`Subscription`] holds the key allocated until it is dropped (or
    /// [`unsubscribe`](Subscription::unsubscribe)d).
    ///
    /// Delivery follows the subject's rules: values arrive in one total order per key, by
    /// reference, and no lock is held while `listener` runs, so it may call any method of this
    /// `PubSub` (or of its topic) for any key.
    ///
    /// # Panics
    ///
    /// With `immediate`, if this call ends up delivering values (the immediate one, or values
    /// queued meanwhile) and a listener panics, the first panic resumes from here once delivery
    /// is done; the subscription is then dropped, releasing the key.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_pub_sub::PubSub;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    ///
    /// let topics = PubSub::<&str, u32>::builder().initial_value(|_| Some(1)).build();
    /// let total = Arc::new(AtomicU32::new(0));
    /// let sum = Arc::clone(&total);
    /// let _subscription = topics.listen("k", move |v: &u32| { sum.fetch_add(*v, Ordering::SeqCst); }, true);
    /// topics.next("k", 41);
    /// assert_eq!(total.load(Ordering::SeqCst), 42);
    /// ```
    pub fn listen<F>(&self, key: K, listener: F, immediate: bool) -> Subscription<K, V, S>
    where
        F: Fn(&V) + Send + Sync + 'static,
    {
        if immediate {
            return Subscription::new(self.registry.allocate(key), listener, true);
        }
        // A fresh key's subject gets its first listener while nobody else can reach it, without
        // its lock; a key allocated already registers the listener through the lock.
        match self
            .registry
            .allocate_with(key, listener, |_, subject, listener| {
                subject.listen_mut(listener)
            }) {
            (lease, Ok(id)) => Subscription::registered(lease, id),
            (lease, Err(listener)) => Subscription::new(lease, listener, false),
        }
    }

    /// Emits `value` on `key`'s topic.
    ///
    /// If the key is allocated, the value becomes its last value and is delivered to its
    /// listeners. If it is not, nobody can be listening: when the topic would be forgotten right
    /// away anyway (no [`should_cleanup`](Builder::should_cleanup) predicate, or the predicate
    /// returns `true` for `(key, value)`), the value is dropped after one lookup, and nothing is
    /// allocated. Otherwise the key is allocated, the value emitted, and the key released, so the
    /// predicate keeps it with `value` as its last value.
    ///
    /// # Panics
    ///
    /// If this call delivers values and a listener panics, the other listeners still receive
    /// the value, and the first panic resumes from here once delivery is done.
    pub fn next(&self, key: K, value: V) {
        let Some(should_cleanup) = &self.should_cleanup else {
            // A key that is not allocated has no listener, and its topic would be freed at
            // once: one lookup, and the value is dropped.
            if let Some(lease) = self.registry.get(&key) {
                emit_then_release(lease, value);
            }
            return;
        };
        self.next_judged(key, value, &**should_cleanup);
    }

    /// [`next`](Self::next) with a cleanup predicate, which may keep a key nobody holds.
    #[inline(never)]
    fn next_judged(&self, key: K, value: V, should_cleanup: &ShouldCleanupFn<K, V>) {
        match self.registry.entry(key) {
            Entry::Allocated(lease) => emit_then_release(lease, value),
            Entry::Vacant(vacant) => {
                // The question its release would ask, asked first: allocate only to keep.
                if should_cleanup(vacant.key(), &value) {
                    return;
                }
                let lease = vacant.allocate();
                let emitted = panic::catch_unwind(AssertUnwindSafe(|| lease.next(value)));
                let Ok(emission) = emitted else {
                    drop(lease);
                    if let Err(payload) = emitted {
                        panic::resume_unwind(payload);
                    }
                    return;
                };
                // Should this be the last hold, the answer is known: keep, unless another value
                // was emitted meanwhile, which the predicate has not seen.
                lease.release_with(|key, subject| {
                    subject.emissions() != emission && cleans_up(should_cleanup, key, subject)
                });
            }
        }
    }

    /// The last value of `key`'s topic.
    ///
    /// For an allocated key, this is the value last emitted (or the initial value if nothing was
    /// emitted yet). For a key that is not allocated, it is the initial value the key *would*
    /// start with (computed now; the key stays unallocated), or `None`.
    ///
    /// Reading takes no lease: it neither keeps the key nor asks the cleanup predicate again.
    pub fn last(&self, key: &K) -> Option<Arc<V>> {
        match self.registry.peek(key, RawSubject::last) {
            Some(last) => last,
            None => self
                .initial_value
                .as_ref()
                .and_then(|initial| initial.for_key(key)),
        }
    }

    /// A handle bound to `key`'s topic, allocating the key if needed; holding it (or any clone)
    /// keeps the key allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_pub_sub::PubSub;
    ///
    /// let topics: PubSub<&str, u32> = PubSub::new();
    /// let topic = topics.subject("k");
    /// topic.next(5);
    /// assert_eq!(topics.last(&"k").as_deref(), Some(&5));
    /// drop(topic);
    /// assert!(!topics.is_allocated("k"));
    /// ```
    pub fn subject(&self, key: K) -> Topic<K, V, S> {
        Topic::new(self.registry.allocate(key))
    }

    /// Like [`subject`](Self::subject), but only if `key` is allocated now; never allocates.
    pub fn topic_if_allocated<Q>(&self, key: &Q) -> Option<Topic<K, V, S>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.registry.get(key).map(Topic::new)
    }

    /// A latest-value [`Stream`](futures_core::Stream) of `key`'s topic, allocating the key if
    /// needed; the key stays allocated while the stream lives.
    ///
    /// The first poll yields the topic's last value, if any; afterwards each poll yields the
    /// latest value emitted since the previous one (a slow consumer skips intermediate values;
    /// nothing is buffered and the publisher never waits). The stream does not end by itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    /// use keyrunner_pub_sub::PubSub;
    ///
    /// let topics: PubSub<&str, u32> = PubSub::new();
    /// let mut stream = topics.stream("k");
    /// topics.next("k", 1);
    /// topics.next("k", 2);
    /// assert_eq!(futures::executor::block_on(stream.next()), Some(2));
    /// ```
    pub fn stream(&self, key: K) -> TopicStream<K, V, S>
    where
        V: Clone,
    {
        TopicStream::new(self.registry.allocate(key))
    }

    /// Whether `key` is allocated now (held by someone, or kept by the predicate).
    pub fn is_allocated<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.registry.is_allocated(key)
    }

    /// Number of allocated keys.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Whether no key is allocated.
    pub fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    /// Frees every key nobody holds whose predicate now says "clean up"; returns how many were
    /// freed.
    pub fn sweep(&self) -> usize {
        self.registry.sweep()
    }

    /// Releases spare capacity, so an empty `PubSub` retains next to nothing.
    pub fn shrink_to_fit(&self) {
        self.registry.shrink_to_fit();
    }

    /// A snapshot of every allocated key with its last value.
    ///
    /// The keys allocated at one moment (waiting for one whose initial value is still being
    /// made), each with its last value read just after, under that key's lock: keys allocated
    /// or freed concurrently may or may not appear, and a key allocated before this call does.
    pub fn entries(&self) -> Vec<(K, Option<Arc<V>>)> {
        let mut entries = Vec::new();
        self.for_each(|key, last| entries.push((key.clone(), last)));
        entries
    }

    /// Calls `f` with every allocated key and its last value: the keys of
    /// [`entries`](Self::entries), without cloning them.
    ///
    /// `f` runs without any lock, so it may use this `PubSub` (listen, publish, release) for any
    /// key, its own included.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_pub_sub::PubSub;
    ///
    /// let topics: PubSub<&str, u32> = PubSub::new();
    /// let _a = topics.listen("a", |_: &u32| {}, false);
    /// let _b = topics.listen("b", |_: &u32| {}, false);
    /// topics.next("a", 7);
    /// let mut total = 0;
    /// topics.for_each(|_, last| total += last.map_or(0, |value| *value));
    /// assert_eq!(total, 7);
    /// ```
    pub fn for_each(&self, mut f: impl FnMut(&K, Option<Arc<V>>)) {
        self.registry
            .for_each(|key, subject| f(key, subject.last()));
    }
}

impl<K, V, S> Clone for PubSub<K, V, S> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            initial_value: self.initial_value.clone(),
            should_cleanup: self.should_cleanup.clone(),
        }
    }
}

impl<K, V, S> fmt::Debug for PubSub<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSub")
            .field("registry", &self.registry)
            .field("initial_value", &self.initial_value.is_some())
            .field("should_cleanup", &self.should_cleanup.is_some())
            .finish_non_exhaustive()
    }
}

/// Configures a [`PubSub`]: initial values, the cleanup predicate, the hasher.
///
/// Created by [`PubSub::builder`].
///
/// # Examples
///
/// ```
/// use keyrunner_pub_sub::PubSub;
///
/// // Keep a finished job's outcome only while it is an error.
/// let outcomes = PubSub::<u64, Result<(), String>>::builder()
///     .should_cleanup(|_job, outcome| outcome.is_ok())
///     .build();
///
/// outcomes.next(1, Ok(()));
/// outcomes.next(2, Err("disk full".to_owned()));
/// assert!(!outcomes.is_allocated(&1));
/// assert!(outcomes.is_allocated(&2));
/// ```
pub struct Builder<K, V, S = RandomState> {
    initial_value: Option<Initial<K, V>>,
    should_cleanup: Option<Arc<ShouldCleanupFn<K, V>>>,
    hasher: S,
}

impl<K, V, S> Builder<K, V, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The value a topic starts with when its key is allocated (`None`: no value).
    ///
    /// It is what [`last`](PubSub::last) returns and what an `immediate` listener receives
    /// before anything was emitted; it is not an emission (the topic still counts as never
    /// having emitted, so it is cleaned up once nobody holds it).
    ///
    /// `f` runs when the key is allocated, without any lock: it may use this `PubSub` for other
    /// keys (callers of this key wait for it; using the key itself panics).
    /// [`PubSub::last`] also calls it for a key that is not allocated.
    #[must_use]
    pub fn initial_value(mut self, f: impl Fn(&K) -> Option<V> + Send + Sync + 'static) -> Self {
        self.initial_value = Some(Initial::PerKey(Arc::new(f)));
        self
    }

    /// Every topic starts from `value`: the same as [`initial_value`](Self::initial_value) with a
    /// constant, but the one value is shared by every key (as one `Arc`), so allocating a key
    /// costs no allocation for it.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_pub_sub::PubSub;
    ///
    /// let topics = PubSub::<u32, &str>::builder()
    ///     .shared_initial_value("idle")
    ///     .build();
    /// let seven = topics.subject(7);
    /// assert_eq!(seven.last().as_deref(), Some(&"idle"));
    /// assert!(std::sync::Arc::ptr_eq(
    ///     &seven.last().unwrap(),
    ///     &topics.last(&8).unwrap(),
    /// ));
    /// ```
    #[must_use]
    pub fn shared_initial_value(mut self, value: V) -> Self {
        self.initial_value = Some(Initial::Shared(Arc::new(value)));
        self
    }

    /// Decides whether a key nobody holds is forgotten: `true` means "clean up", `false` keeps
    /// the key (and its last value) allocated until a later release or [`sweep`](PubSub::sweep)
    /// gets `true`.
    ///
    /// It receives the key and the topic's last value, and is never asked about a topic that has
    /// never emitted (such a topic is always cleaned up). Default: always clean up.
    ///
    /// `f` runs, without any lock, once each time the last holder of a key leaves, and for
    /// each unheld key in a [`sweep`](PubSub::sweep); it may use this `PubSub`, this key
    /// included (a key held again while `f` runs stays allocated). [`PubSub::next`] asks it,
    /// once, whether a value for a key nobody holds is worth allocating. If it panics, the key
    /// stays allocated and the panic propagates to the caller that released the key.
    #[must_use]
    pub fn should_cleanup(mut self, f: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.should_cleanup = Some(Arc::new(f));
        self
    }

    /// Kept so that code written for earlier versions compiles; it does nothing.
    ///
    /// Every topic now writes a new value into the allocation of the value it replaces whenever
    /// nobody else holds that one (see [`Subject::reuse_values`]): a key that keeps receiving
    /// values allocates nothing per value.
    ///
    /// [`Subject::reuse_values`]: keyrunner_subject::Subject::reuse_values
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_pub_sub::PubSub;
    ///
    /// let progress = PubSub::<&str, u32>::builder().reuse_values().build();
    /// let build = progress.subject("build");
    /// for percent in 0..=100 {
    ///     build.next(percent);
    /// }
    /// assert_eq!(build.last().as_deref(), Some(&100));
    /// ```
    #[must_use]
    pub fn reuse_values(self) -> Self
    where
        V: Default,
    {
        self
    }

    /// Uses `hasher` to hash keys, like [`HashMap::with_hasher`](std::collections::HashMap::with_hasher).
    #[must_use]
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> Builder<K, V, S2> {
        Builder {
            initial_value: self.initial_value,
            should_cleanup: self.should_cleanup,
            hasher,
        }
    }

    /// Builds the [`PubSub`].
    #[must_use]
    pub fn build(self) -> PubSub<K, V, S>
    where
        S: BuildHasher,
    {
        let init = self.initial_value.clone();
        let registry = Registry::builder(move |key: &K| {
            init.as_ref()
                .map_or_else(RawSubject::new, |initial| initial.subject_for(key))
        });
        let registry = match self.should_cleanup.clone() {
            Some(should_cleanup) => registry.cleanup(move |key: &K, subject: &RawSubject<V>| {
                cleans_up(&*should_cleanup, key, subject)
            }),
            // The registry's default: always free.
            None => registry,
        };
        PubSub {
            registry: registry.hasher(self.hasher).build(),
            initial_value: self.initial_value,
            should_cleanup: self.should_cleanup,
        }
    }
}

impl<K, V, S> fmt::Debug for Builder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("initial_value", &self.initial_value.is_some())
            .field("should_cleanup", &self.should_cleanup.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether a topic nobody holds is cleaned up: always if it never emitted, else as
/// `should_cleanup` says about its last value.
fn cleans_up<K, V>(
    should_cleanup: &ShouldCleanupFn<K, V>,
    key: &K,
    subject: &RawSubject<V>,
) -> bool {
    subject.emissions() == 0 || subject.last().is_none_or(|last| should_cleanup(key, &last))
}

/// Emits `value` on a leased topic, then releases the lease, also when a listener panicked
/// (the panic resumes after the release, so that the release never runs while unwinding).
/// Kept out of line: the lookup that finds nobody to deliver to stays a small function.
#[inline(never)]
fn emit_then_release<K: Eq, V, S>(lease: Lease<K, RawSubject<V>, S>, value: V) {
    let emitted = panic::catch_unwind(AssertUnwindSafe(|| lease.next(value)));
    drop(lease);
    if let Err(payload) = emitted {
        panic::resume_unwind(payload);
    }
}
