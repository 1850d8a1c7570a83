//! The registry: one map of keyed entries behind one lock.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, hash_map};
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::builder::Builder;
use crate::lease::Lease;
use crate::sync::{Arc, Mutex, lock, try_lock};

/// Creates the value of a key on its first allocation.
pub(crate) type Init<K, V> = Box<dyn Fn(&K) -> V + Send + Sync>;

/// Decides whether an unleased entry is freed (`true`) or kept (`false`).
pub(crate) type Cleanup<K, V> = Box<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// Keyed, reference-counted values that live while they are leased.
///
/// [`allocate`](Registry::allocate) hands out a [`Lease`] on a key, creating the key's value with
/// the registry's initializer if the key is not allocated yet. Every lease of a key shares that
/// one value. When the last lease of a key is dropped, the registry asks its cleanup predicate
/// whether to free the entry (the default predicate always says yes); an entry the predicate
/// keeps stays allocated, unleased, until a later release or [`sweep`](Registry::sweep) frees it.
///
/// The registry is cheap to clone: clones share the same entries. It is `Send + Sync` when `K`,
/// `V` and the hasher `S` are (`V` must be `Sync` because every lease shares it).
///
/// # Guarantees
///
/// - The lease count of a key and the decision to free it are taken in one critical section: a
///   concurrent [`allocate`](Registry::allocate) or [`get`](Registry::get) either sees the entry
///   before it is freed (and keeps it alive) or after (and, for `allocate`, creates a fresh
///   value). No caller ever receives a value that is being removed, and no entry is freed twice.
/// - The initializer runs once per allocation lifetime of a key; the cleanup predicate runs once
///   each time a key's lease count drops to zero, and once per unleased entry in each `sweep`.
/// - The initializer, the cleanup predicate and the closure given to
///   [`for_each`](Registry::for_each) run while the registry's lock is held, so they must not
///   call back into this registry (doing so deadlocks or panics). Values are dropped after the
///   lock is released, so a value's `Drop` may use the registry.
/// - A panic in the initializer or the predicate propagates to the caller of `allocate`, the
///   dropped lease, or `sweep`, and leaves the registry consistent and usable: a panicking
///   initializer allocates nothing, and an entry whose predicate panicked stays allocated with no
///   leases. The lock is never left poisoned.
///
/// # Examples
///
/// ```
/// use keyrunner_resource_registry::Registry;
///
/// let connections = Registry::new(|host: &String| format!("connection to {host}"));
///
/// let a = connections.allocate("db".to_owned());
/// let b = connections.allocate("db".to_owned());
/// assert_eq!(*a, "connection to db");
/// assert!(std::ptr::eq(&*a, &*b)); // one value, shared by every lease of the key
///
/// drop(a);
/// assert!(connections.is_allocated("db")); // `b` still leases it
/// drop(b);
/// assert!(!connections.is_allocated("db")); // the last lease freed it
/// ```
pub struct Registry<K, V, S = RandomState> {
    pub(crate) inner: Arc<Inner<K, V, S>>,
}

/// The state shared by a registry, its clones and its leases.
pub(crate) struct Inner<K, V, S> {
    pub(crate) entries: Mutex<HashMap<K, Entry<K, V>, S>>,
    pub(crate) init: Init<K, V>,
    /// `None` is the default predicate: always free.
    pub(crate) cleanup: Option<Cleanup<K, V>>,
    /// Releases one lease of a key. Stored as a function pointer, taken where `K: Eq + Hash` and
    /// `S: BuildHasher` are known, so that `Lease`'s destructor needs no bounds.
    pub(crate) release: fn(&Self, &K),
}

/// A key and its value, shared by the entry and every lease, so a lease costs no key clone.
pub(crate) struct Shared<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
}

/// One allocated key.
pub(crate) struct Entry<K, V> {
    pub(crate) shared: Arc<Shared<K, V>>,
    /// Number of live leases. Only read or written under the registry lock; a `Cell` lets lookups
    /// by a borrowed key (`get`, `Lease::clone`) count without a second, mutable lookup.
    pub(crate) leases: Cell<usize>,
}

impl<K, V, S> Inner<K, V, S> {
    /// Asks the cleanup predicate whether an unleased entry is freed.
    fn should_free(&self, key: &K, value: &V) -> bool {
        self.cleanup
            .as_ref()
            .is_none_or(|cleanup| cleanup(key, value))
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> Inner<K, V, S> {
    /// Releases one lease of `key`: the lease count and the decision to free the entry are taken
    /// under one lock.
    pub(crate) fn release_lease(&self, key: &K) {
        // Declared before the guard so that a freed entry is dropped after the lock is released,
        // also while unwinding.
        let mut freed = None;
        let mut entries = lock(&self.entries);
        // A live lease keeps its entry in the map, so the entry is present; were it absent (a key
        // whose `Hash` or `Eq` changed), there is nothing to release.
        let Some(entry) = entries.get(key) else {
            return;
        };
        let leases = entry.leases.get().saturating_sub(1);
        // The count is updated before the predicate runs: if it panics, the entry stays
        // allocated with no leases.
        entry.leases.set(leases);
        if leases == 0 && self.should_free(key, &entry.shared.value) {
            freed = entries.remove_entry(key);
        }
        drop(entries);
        drop(freed);
    }
}

impl<K: Eq + Hash + Clone, V> Registry<K, V> {
    /// Creates a registry whose entries are freed as soon as their last lease is dropped.
    ///
    /// `init` creates a key's value on its first allocation. It runs under the registry lock and
    /// must not call back into this registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let lengths = Registry::new(|key: &&str| key.len());
    /// assert_eq!(*lengths.allocate("four"), 4);
    /// assert!(lengths.is_empty());
    /// ```
    pub fn new(init: impl Fn(&K) -> V + Send + Sync + 'static) -> Self {
        Self::builder(init).build()
    }

    /// Starts a [`Builder`] to set a cleanup predicate or a hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// // Keep counters that are not zero, even when nobody leases them.
    /// let counters = Registry::builder(|_: &u32| std::sync::atomic::AtomicU32::new(0))
    ///     .cleanup(|_, counter| counter.load(std::sync::atomic::Ordering::Relaxed) == 0)
    ///     .build();
    /// counters.allocate(1).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    /// assert!(counters.is_allocated(&1));
    /// ```
    pub fn builder(init: impl Fn(&K) -> V + Send + Sync + 'static) -> Builder<K, V> {
        Builder::new(Box::new(init))
    }
}

impl<K: Eq + Hash + Clone, V, S: BuildHasher> Registry<K, V, S> {
    /// Leases `key`, creating its value with the initializer if the key is not allocated.
    ///
    /// The initializer runs under the registry lock; if it panics, the panic propagates here and
    /// nothing is allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let registry = Registry::new(|key: &u32| key * 10);
    /// let lease = registry.allocate(7);
    /// assert_eq!((*lease.key(), *lease), (7, 70));
    /// ```
    pub fn allocate(&self, key: K) -> Lease<K, V, S> {
        let value = {
            let mut entries = lock(&self.inner.entries);
            // One hash and one probe, whether the key is new or not.
            match entries.entry(key) {
                hash_map::Entry::Occupied(occupied) => {
                    let entry = occupied.get();
                    // Cannot overflow: every lease also holds a strong count of
                    // `entry.shared`, and `Arc` aborts before its count reaches `usize::MAX`.
                    entry.leases.set(entry.leases.get() + 1);
                    Arc::clone(&entry.shared)
                }
                hash_map::Entry::Vacant(vacant) => {
                    let value = (self.inner.init)(vacant.key());
                    let shared = Arc::new(Shared {
                        key: vacant.key().clone(),
                        value,
                    });
                    vacant.insert(Entry {
                        shared: Arc::clone(&shared),
                        leases: Cell::new(1),
                    });
                    shared
                }
            }
        };
        Lease::new(Arc::clone(&self.inner), value)
    }

    /// Leases `key` only if it is allocated now; never creates a value.
    ///
    /// This also revives an entry kept by the cleanup predicate.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let registry = Registry::new(|key: &String| key.len());
    /// assert!(registry.get("absent").is_none());
    /// let _held = registry.allocate("present".to_owned());
    /// assert_eq!(registry.get("present").map(|lease| *lease), Some(7));
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<Lease<K, V, S>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let shared = {
            let entries = lock(&self.inner.entries);
            let entry = entries.get(key)?;
            // Cannot overflow, as in `allocate`.
            entry.leases.set(entry.leases.get() + 1);
            Arc::clone(&entry.shared)
        };
        Some(Lease::new(Arc::clone(&self.inner), shared))
    }

    /// Calls `f` with `key`'s value if the key is allocated now, without leasing it; returns
    /// what `f` returned.
    ///
    /// Cheaper than [`get`](Self::get) for a quick read: one lock, no lease to release. `f`
    /// runs under the registry lock and must not call back into this registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let registry = Registry::new(|key: &u32| key * 2);
    /// assert_eq!(registry.peek(&1, |value| *value), None);
    /// let _held = registry.allocate(1);
    /// assert_eq!(registry.peek(&1, |value| *value), Some(2));
    /// ```
    pub fn peek<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let entries = lock(&self.inner.entries);
        entries.get(key).map(|entry| f(&entry.shared.value))
    }

    /// Whether `key` is allocated now (leased, or unleased and kept by the predicate).
    pub fn is_allocated<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        lock(&self.inner.entries).contains_key(key)
    }

    /// Frees every unleased entry whose cleanup predicate now says "free"; returns how many were
    /// freed.
    ///
    /// The predicate runs under the registry lock, once per unleased entry. If it panics, the
    /// panic propagates here; entries already freed stay freed and the others stay allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let keep = Arc::new(AtomicBool::new(true));
    /// let registry = Registry::builder(|_: &u8| ())
    ///     .cleanup({
    ///         let keep = Arc::clone(&keep);
    ///         move |_, _| !keep.load(Ordering::Relaxed)
    ///     })
    ///     .build();
    ///
    /// drop(registry.allocate(1));
    /// assert_eq!(registry.sweep(), 0); // kept
    /// keep.store(false, Ordering::Relaxed);
    /// assert_eq!(registry.sweep(), 1); // freed
    /// assert!(registry.is_empty());
    /// ```
    pub fn sweep(&self) -> usize {
        let Some(cleanup) = &self.inner.cleanup else {
            // The default predicate frees every entry when its last lease drops, so no entry is
            // ever unleased.
            return 0;
        };
        // Declared before the guard so that freed values are dropped after the lock is released,
        // also while unwinding.
        let mut freed = Vec::new();
        let mut entries = lock(&self.inner.entries);
        entries.retain(|key, entry| {
            if entry.leases.get() > 0 || !cleanup(key, &entry.shared.value) {
                return true;
            }
            freed.push(Arc::clone(&entry.shared));
            false
        });
        drop(entries);
        freed.len()
    }
}

impl<K, V, S> Registry<K, V, S> {
    /// Number of allocated keys, leased or kept by the cleanup predicate.
    pub fn len(&self) -> usize {
        lock(&self.inner.entries).len()
    }

    /// Whether no key is allocated.
    pub fn is_empty(&self) -> bool {
        lock(&self.inner.entries).is_empty()
    }

    /// Number of keys the registry can hold without reallocating its map.
    pub fn capacity(&self) -> usize {
        lock(&self.inner.entries).capacity()
    }

    /// Calls `f` with every allocated key and its value: a consistent snapshot.
    ///
    /// `f` runs under the registry lock and must not call back into this registry (doing so
    /// deadlocks or panics); other threads using the registry wait until `for_each` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let registry = Registry::new(|key: &u32| key * 2);
    /// let _leases = [registry.allocate(1), registry.allocate(2)];
    /// let mut sum = 0;
    /// registry.for_each(|_, value| sum += value);
    /// assert_eq!(sum, 6);
    /// ```
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        let entries = lock(&self.inner.entries);
        for (key, entry) in entries.iter() {
            f(key, &entry.shared.value);
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> Registry<K, V, S> {
    /// Releases spare capacity of the map, so that an emptied registry retains no entry storage.
    pub fn shrink_to_fit(&self) {
        lock(&self.inner.entries).shrink_to_fit();
    }
}

impl<K, V, S> Clone for Registry<K, V, S> {
    /// Returns a handle to the same registry.
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, S> fmt::Debug for Registry<K, V, S> {
    /// Prints the number of allocated keys, or `<locked>` if the registry is busy; never blocks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Registry");
        match try_lock(&self.inner.entries) {
            Some(entries) => debug.field("len", &entries.len()),
            None => debug.field("len", &format_args!("<locked>")),
        };
        debug.finish_non_exhaustive()
    }
}
