//! Keyed pub-sub peers: a `Mutex<HashMap<K, Vec<callback>>>` and its `DashMap` equivalent.
//!
//! Both run callbacks while the map (or its shard) is locked: the simplest version, which
//! deadlocks if a callback publishes to the same map. `next` to a key nobody listens to is one
//! lookup and drops the value; the last subscription of a key removes the key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;

/// A callback with the id its subscription removes it by.
type Callbacks<V> = Vec<(u64, Box<dyn Fn(&V) + Send + Sync>)>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One `Mutex` around a `HashMap` of callback lists.
pub(crate) struct MutexMap<K, V> {
    inner: Arc<MutexMapInner<K, V>>,
}

struct MutexMapInner<K, V> {
    topics: Mutex<HashMap<K, Callbacks<V>>>,
    next_id: AtomicU64,
}

/// Removes its callback when dropped, and the key with its last callback.
pub(crate) struct MutexMapSubscription<K: Eq + Hash, V> {
    inner: Arc<MutexMapInner<K, V>>,
    key: K,
    id: u64,
}

impl<K: Eq + Hash, V> MutexMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(MutexMapInner {
                topics: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn listen(
        &self,
        key: K,
        callback: impl Fn(&V) + Send + Sync + 'static,
    ) -> MutexMapSubscription<K, V>
    where
        K: Clone,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.topics)
            .entry(key.clone())
            .or_default()
            .push((id, Box::new(callback)));
        MutexMapSubscription {
            inner: Arc::clone(&self.inner),
            key,
            id,
        }
    }

    pub(crate) fn next(&self, key: K, value: V) {
        let topics = lock(&self.inner.topics);
        if let Some(callbacks) = topics.get(&key) {
            for (_, callback) in callbacks {
                callback(&value);
            }
        }
    }
}

impl<K: Eq + Hash, V> Drop for MutexMapSubscription<K, V> {
    fn drop(&mut self) {
        let mut topics = lock(&self.inner.topics);
        let mut removed = None;
        if let Some(callbacks) = topics.get_mut(&self.key) {
            if let Some(at) = callbacks.iter().position(|(id, _)| *id == self.id) {
                removed = Some(callbacks.swap_remove(at));
            }
            if callbacks.is_empty() {
                topics.remove(&self.key);
            }
        }
        drop(topics);
        drop(removed);
    }
}

/// A sharded `DashMap` of callback lists.
pub(crate) struct DashMapPubSub<K: Eq + Hash, V> {
    inner: Arc<DashMapInner<K, V>>,
}

struct DashMapInner<K: Eq + Hash, V> {
    topics: DashMap<K, Callbacks<V>>,
    next_id: AtomicU64,
}

/// Removes its callback when dropped, and the key with its last callback.
pub(crate) struct DashMapSubscription<K: Eq + Hash, V> {
    inner: Arc<DashMapInner<K, V>>,
    key: K,
    id: u64,
}

impl<K: Eq + Hash + Clone, V> DashMapPubSub<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(DashMapInner {
                topics: DashMap::new(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn listen(
        &self,
        key: K,
        callback: impl Fn(&V) + Send + Sync + 'static,
    ) -> DashMapSubscription<K, V> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .topics
            .entry(key.clone())
            .or_default()
            .push((id, Box::new(callback)));
        DashMapSubscription {
            inner: Arc::clone(&self.inner),
            key,
            id,
        }
    }

    pub(crate) fn next(&self, key: K, value: V) {
        if let Some(callbacks) = self.inner.topics.get(&key) {
            for (_, callback) in callbacks.iter() {
                callback(&value);
            }
        }
    }
}

impl<K: Eq + Hash, V> Drop for DashMapSubscription<K, V> {
    fn drop(&mut self) {
        let id = self.id;
        let removed = self.inner.topics.remove_if_mut(&self.key, |_, callbacks| {
            callbacks.retain(|(other, _)| *other != id);
            callbacks.is_empty()
        });
        drop(removed);
    }
}
