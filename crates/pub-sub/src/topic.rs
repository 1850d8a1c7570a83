//! Handles bound to one key: [`Topic`], [`Subscription`] and [`TopicStream`].

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;
use keyrunner_resource_registry::Lease;
use keyrunner_subject::raw::{ListenerId, RawSubject, Watcher};

/// A handle bound to one key's topic; holding it (or any clone) keeps the key allocated.
///
/// Created by [`PubSub::subject`](crate::PubSub::subject) and
/// [`PubSub::topic_if_allocated`](crate::PubSub::topic_if_allocated). Everything done through a
/// topic acts on the same subject as the `PubSub` methods for its key, without a lookup.
/// Cloning it takes another lease on the key.
///
/// # Examples
///
/// ```
/// use keyrunner_pub_sub::PubSub;
/// use std::sync::{Arc, Mutex};
///
/// let topics: PubSub<&str, u32> = PubSub::new();
/// let topic = topics.subject("counter");
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let subscription = topic.listen(move |v: &u32| sink.lock().unwrap().push(*v), false);
///
/// topic.next(1);
/// assert!(topic.update(|last| last.map(|v| v + 1))); // compare-and-set style
/// assert!(!topic.update(|_| None)); // no emission
///
/// assert_eq!(*seen.lock().unwrap(), [1, 2]);
/// assert_eq!(topic.last().as_deref(), Some(&2));
/// assert_eq!(topic.listener_count(), 1);
/// drop(subscription);
/// drop(topic);
/// assert!(topics.is_empty());
/// ```
pub struct Topic<K, V, S = RandomState> {
    lease: Lease<K, RawSubject<V>, S>,
}

impl<K, V, S> Topic<K, V, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    pub(crate) fn new(lease: Lease<K, RawSubject<V>, S>) -> Self {
        Self { lease }
    }

    /// The key this topic is bound to.
    pub fn key(&self) -> &K {
        self.lease.key()
    }

    /// Emits `value` to the topic's listeners; it becomes the last value.
    ///
    /// # Panics
    ///
    /// If this call delivers values and a listener panics, the other listeners still receive
    /// the value, and the first panic resumes from here once delivery is done.
    pub fn next(&self, value: V) {
        self.lease.next(value);
    }

    /// Atomically computes the next value from the last one: if `f(last)` returns `Some(v)`,
    /// `v` is emitted exactly as by [`next`](Self::next) and `true` is returned; `None` emits
    /// nothing and returns `false`.
    ///
    /// Two racing updates see each other's values, which makes this a compare-and-set. `f` runs
    /// under the subject's lock: it must not call into this topic or its `PubSub`.
    ///
    /// # Panics
    ///
    /// As for [`next`](Self::next).
    pub fn update(&self, f: impl FnOnce(Option<&V>) -> Option<V>) -> bool {
        self.lease.update(f)
    }

    /// The topic's last value (the initial value if nothing was emitted yet), if any.
    pub fn last(&self) -> Option<Arc<V>> {
        self.lease.last()
    }

    /// Registers `listener` on this topic; with `immediate`, it is first called with the last
    /// value, if any. Same rules as [`PubSub::listen`](crate::PubSub::listen).
    pub fn listen<F>(&self, listener: F, immediate: bool) -> Subscription<K, V, S>
    where
        F: Fn(&V) + Send + Sync + 'static,
    {
        Subscription::new(self.lease.clone(), listener, immediate)
    }

    /// A latest-value stream of this topic. Same rules as [`PubSub::stream`](crate::PubSub::stream).
    pub fn stream(&self) -> TopicStream<K, V, S>
    where
        V: Clone,
    {
        TopicStream::new(self.lease.clone())
    }

    /// Number of listeners registered on this topic now.
    pub fn listener_count(&self) -> usize {
        self.lease.listener_count()
    }
}

impl<K, V, S> Clone for Topic<K, V, S>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
{
    fn clone(&self) -> Self {
        Self {
            lease: self.lease.clone(),
        }
    }
}

impl<K: fmt::Debug, V, S> fmt::Debug for Topic<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("key", self.lease.key())
            .field("subject", &*self.lease)
            .finish_non_exhaustive()
    }
}

/// A listener registered on one key's topic; it keeps the key allocated.
///
/// Dropping it (or calling [`unsubscribe`](Self::unsubscribe)) removes the listener, then
/// releases the key: if this was the key's last holder, the key is forgotten, unless the
/// [`should_cleanup`](crate::Builder::should_cleanup) predicate keeps it.
///
/// Created by [`PubSub::listen`](crate::PubSub::listen) and [`Topic::listen`].
///
/// # Examples
///
/// ```
/// use keyrunner_pub_sub::PubSub;
///
/// let topics: PubSub<&str, u32> = PubSub::new();
/// let first = topics.listen("k", |_: &u32| {}, false);
/// let second = topics.listen("k", |_: &u32| {}, false);
/// first.unsubscribe();
/// assert!(topics.is_allocated("k")); // `second` still holds it
/// second.unsubscribe();
/// assert!(!topics.is_allocated("k"));
/// ```
#[must_use = "dropping a Subscription unsubscribes the listener and releases its key"]
pub struct Subscription<K, V, S = RandomState> {
    /// `None` only once removed.
    listener: Option<ListenerId>,
    lease: Lease<K, RawSubject<V>, S>,
}

impl<K, V, S> Subscription<K, V, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    pub(crate) fn new<F>(lease: Lease<K, RawSubject<V>, S>, listener: F, immediate: bool) -> Self
    where
        F: Fn(&V) + Send + Sync + 'static,
    {
        // Should an immediate delivery panic, the lease is dropped while unwinding: the key is
        // released, and the listener was removed already.
        let listener = lease.listen(listener, immediate);
        Self {
            listener: Some(listener),
            lease,
        }
    }

    /// A subscription for `listener`, registered already on the topic `lease` holds.
    pub(crate) fn registered(lease: Lease<K, RawSubject<V>, S>, listener: ListenerId) -> Self {
        Self {
            listener: Some(listener),
            lease,
        }
    }

    /// The key this subscription listens to.
    pub fn key(&self) -> &K {
        self.lease.key()
    }

    /// Removes the listener, then releases the key; the same as dropping the subscription.
    ///
    /// When this is called from another thread while a value is being delivered, it waits until
    /// that value has reached every listener, so the listener gets nothing after `unsubscribe`
    /// returns; except when called from inside a listener (or a pub-sub callback), where it
    /// returns at once: see [who waits for whom](keyrunner_subject#who-waits-for-whom).
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl<K, V, S> Drop for Subscription<K, V, S> {
    fn drop(&mut self) {
        // The listener goes first; the lease, a field, is released after this.
        if let Some(listener) = self.listener.take() {
            self.lease.unlisten(listener);
        }
    }
}

impl<K: fmt::Debug, V, S> fmt::Debug for Subscription<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("key", self.lease.key())
            .finish_non_exhaustive()
    }
}

/// A latest-value [`Stream`] of one key's topic; it keeps the key allocated while it lives.
///
/// The first poll yields the topic's last value, if any; afterwards each poll yields the
/// latest value emitted since the previous one: a slow consumer skips intermediate values but
/// never misses the latest, nothing is buffered and the publisher never waits. Each yielded
/// value is cloned once. The stream does not end by itself (it holds its key); drop it to stop.
///
/// Created by [`PubSub::stream`](crate::PubSub::stream) and [`Topic::stream`].
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// use keyrunner_pub_sub::PubSub;
///
/// let topics = PubSub::<&str, u32>::builder().initial_value(|_| Some(0)).build();
/// let mut stream = topics.stream("k");
/// futures::executor::block_on(async {
///     assert_eq!(stream.next().await, Some(0));
///     topics.next("k", 7);
///     assert_eq!(stream.next().await, Some(7));
/// });
/// assert!(topics.is_allocated("k"));
/// drop(stream);
/// assert!(!topics.is_allocated("k"));
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct TopicStream<K, V, S = RandomState> {
    /// `None` only once dropped.
    watcher: Option<Watcher>,
    lease: Lease<K, RawSubject<V>, S>,
}

impl<K, V, S> TopicStream<K, V, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    pub(crate) fn new(lease: Lease<K, RawSubject<V>, S>) -> Self {
        Self {
            watcher: Some(lease.watch()),
            lease,
        }
    }

    /// The key this stream follows.
    pub fn key(&self) -> &K {
        self.lease.key()
    }
}

impl<K, V: Clone, S> Stream for TopicStream<K, V, S> {
    type Item = V;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<V>> {
        let this = self.get_mut();
        match &mut this.watcher {
            Some(watcher) => this.lease.poll_watch(watcher, cx),
            None => Poll::Ready(None),
        }
    }
}

impl<K, V: Clone, S> FusedStream for TopicStream<K, V, S> {
    fn is_terminated(&self) -> bool {
        self.watcher.as_ref().is_none_or(Watcher::is_terminated)
    }
}

impl<K, V, S> Drop for TopicStream<K, V, S> {
    fn drop(&mut self) {
        // The stream's slot goes first; the lease, a field, is released after this.
        if let Some(watcher) = self.watcher.take() {
            self.lease.unwatch(watcher);
        }
    }
}

impl<K: fmt::Debug, V, S> fmt::Debug for TopicStream<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicStream")
            .field("key", self.lease.key())
            .field("watcher", &self.watcher)
            .finish_non_exhaustive()
    }
}
