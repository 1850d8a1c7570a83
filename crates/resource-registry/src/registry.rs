//! The registry: a table of keyed nodes behind one short-lived lock; every callback runs with
//! the lock released.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{self, AssertUnwindSafe};

use crate::builder::Builder;
use crate::lease::Lease;
use crate::node::{Node, Phase};
use crate::sync::{self, Arc, Condvar, Mutex, MutexGuard, Ordering, lock, try_lock};
use crate::table::Table;

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
/// - The lease count of a key and the decision to free it cannot be split by an allocation: a
///   concurrent [`allocate`](Registry::allocate) or [`get`](Registry::get) either finds the
///   entry before it is freed (and keeps it alive) or after (and, for `allocate`, creates a
///   fresh value). No caller ever receives a value that is being removed, and no entry is freed
///   twice.
/// - The initializer runs once per allocation lifetime of a key; the cleanup predicate runs
///   exactly once each time a key's lease count drops to zero, and once per unleased entry in
///   each `sweep`.
/// - **Callbacks run without the lock**, so they may call back: the initializer, the cleanup
///   predicate and the closures given to [`peek`](Registry::peek) and
///   [`for_each`](Registry::for_each) may read this registry and allocate, lease or release
///   other keys. See the [crate documentation](crate#who-waits-for-whom) for who waits for whom.
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
    pub(crate) table: Mutex<Table<K, V>>,
    /// Callers waiting for an initializer to finish wait here, with the table's lock.
    pub(crate) initialized: Condvar,
    pub(crate) hasher: S,
    pub(crate) init: Init<K, V>,
    /// `None` is the default predicate: always free.
    pub(crate) cleanup: Option<Cleanup<K, V>>,
    /// Releases one lease. Stored as a function pointer, taken where `K: Eq` is known, so that
    /// `Lease`'s destructor needs no bounds.
    pub(crate) release: fn(&Self, &Arc<Node<K, V>>),
}

/// What [`Registry::entry`] found.
///
/// Unlike a `HashMap` entry, it holds no lock: [`VacantEntry::allocate`] looks the key up again
/// (with the hash already computed) and leases whatever value is there by then.
pub enum Entry<'a, K, V, S = RandomState> {
    /// The key was allocated: a lease on it.
    Allocated(Lease<K, V, S>),
    /// The key was not allocated.
    Vacant(VacantEntry<'a, K, V, S>),
}

/// A key that was not allocated when [`Registry::entry`] looked, with its hash.
pub struct VacantEntry<'a, K, V, S = RandomState> {
    registry: &'a Registry<K, V, S>,
    hash: u64,
    key: K,
}

impl<K, V, S> Inner<K, V, S> {
    /// Asks the cleanup predicate whether an unleased entry is freed.
    fn should_free(&self, key: &K, value: &V) -> bool {
        self.cleanup
            .as_ref()
            .is_none_or(|cleanup| cleanup(key, value))
    }

    /// Waits, with the table locked, until `node`'s initializer finishes; returns the lock and
    /// whether the value was made (`false`: the initializer panicked and the node is gone).
    /// `counted`: the caller raised the node's count for itself (a lease to be).
    ///
    /// # Panics
    ///
    /// If the calling thread is running `node`'s initializer: it would wait for itself.
    fn wait_for<'a>(
        &'a self,
        mut table: MutexGuard<'a, Table<K, V>>,
        node: &Node<K, V>,
        counted: bool,
    ) -> (MutexGuard<'a, Table<K, V>>, bool) {
        loop {
            match node.phase() {
                Phase::Ready => return (table, true),
                Phase::Failed => return (table, false),
                Phase::Init => {}
            }
            if node.initialized_by_caller() {
                if counted {
                    // Take back the lease this caller was counted for; the creator's remains.
                    node.leases.fetch_sub(1, Ordering::Relaxed);
                }
                drop(table);
                panic!(
                    "a registry initializer used its own key (with `allocate`, `get`, `entry` \
                     or `peek`): the key's value does not exist until the initializer returns"
                );
            }
            if node.announce_waiter() == Phase::Init {
                table = sync::wait(&self.initialized, table);
            }
        }
    }

    /// Wakes the callers waiting for initializers. The lock is taken first so that a caller
    /// that announced itself is already waiting on the condition variable.
    fn notify_waiters(&self) {
        drop(lock(&self.table));
        self.initialized.notify_all();
    }

    /// Leases the node found for a key (its count already raised, the lock held), waiting for
    /// its initializer if it runs; `None` if that initializer panicked.
    #[inline]
    fn lease_found(
        self: &Arc<Self>,
        table: MutexGuard<'_, Table<K, V>>,
        node: Arc<Node<K, V>>,
    ) -> Option<Lease<K, V, S>> {
        if node.phase() == Phase::Ready {
            drop(table);
            return Some(Lease::new(Arc::clone(self), node));
        }
        self.lease_when_ready(table, node)
    }

    /// [`lease_found`](Self::lease_found) for a node whose initializer still runs.
    #[cold]
    fn lease_when_ready(
        self: &Arc<Self>,
        table: MutexGuard<'_, Table<K, V>>,
        node: Arc<Node<K, V>>,
    ) -> Option<Lease<K, V, S>> {
        let (table, ready) = self.wait_for(table, &node, true);
        drop(table);
        // A failed node's count no longer matters: it left the table, and it is dropped here,
        // with the lock released (its key's destructor is user code).
        ready.then(|| Lease::new(Arc::clone(self), node))
    }

    /// Leases the key `key`, whose hash is `hash`, if it is allocated.
    ///
    /// Inlined into every lookup: a key that is not allocated costs one lock and one probe.
    #[inline(always)]
    fn lookup<Q>(self: &Arc<Self>, hash: u64, key: &Q) -> Option<Lease<K, V, S>>
    where
        K: Borrow<Q> + Eq,
        Q: ?Sized + Eq,
    {
        let table = lock(&self.table);
        let node = table.get(hash, key)?;
        // Cannot overflow: every lease also holds a strong count of the node, and `Arc`
        // aborts before its count reaches `isize::MAX`.
        node.leases.fetch_add(1, Ordering::Relaxed);
        let node = Arc::clone(node);
        match self.lease_found(table, node) {
            Some(lease) => Some(lease),
            None => self.lookup_again(hash, key),
        }
    }

    /// [`lookup`](Self::lookup) after the initializer of the node it found panicked: the key
    /// is not allocated any more, unless another caller allocated it since.
    #[cold]
    #[inline(never)]
    fn lookup_again<Q>(self: &Arc<Self>, hash: u64, key: &Q) -> Option<Lease<K, V, S>>
    where
        K: Borrow<Q> + Eq,
        Q: ?Sized + Eq,
    {
        loop {
            let table = lock(&self.table);
            let node = table.get(hash, key)?;
            // Cannot overflow: every lease also holds a strong count of the node, and `Arc`
            // aborts before its count reaches `isize::MAX`.
            node.leases.fetch_add(1, Ordering::Relaxed);
            let node = Arc::clone(node);
            match self.lease_found(table, node) {
                Some(lease) => return Some(lease),
                // The initializer panicked: the key is not allocated any more, unless another
                // caller allocated it since. Look again.
                None => continue,
            }
        }
    }

    /// Leases `key`, whose hash is `hash`, creating its value if it is not allocated; `create`
    /// gets the value it creates, with `data`, before anyone else can see it. Returns what
    /// `create` returned, or `data` back if the key was allocated.
    fn allocate<D, R>(
        self: &Arc<Self>,
        hash: u64,
        key: K,
        data: D,
        create: impl FnOnce(&K, &mut V, D) -> R,
    ) -> (Lease<K, V, S>, Result<R, D>)
    where
        K: Eq,
    {
        let mut table = lock(&self.table);
        while let Some(node) = table.get(hash, &key) {
            // Cannot overflow, as in `lookup`.
            node.leases.fetch_add(1, Ordering::Relaxed);
            let node = Arc::clone(node);
            match self.lease_found(table, node) {
                Some(lease) => return (lease, Err(data)),
                None => table = lock(&self.table),
            }
        }
        // `new_cyclic` allocates before the node is built, so the node (large: its value's
        // cell is inline) is built in place instead of on the stack and then copied.
        let node = Arc::new_cyclic(|_| Node::new(hash, key));
        table.insert(Arc::clone(&node));
        drop(table);
        let created = self.initialize(&node, data, create);
        (Lease::new(Arc::clone(self), node), Ok(created))
    }

    /// Runs the initializer of the node this thread just created, without the lock, and
    /// publishes the value; if the initializer panics, removes the node and resumes the panic.
    fn initialize<D, R>(
        &self,
        node: &Node<K, V>,
        data: D,
        create: impl FnOnce(&K, &mut V, D) -> R,
    ) -> R
    where
        K: Eq,
    {
        let made = panic::catch_unwind(AssertUnwindSafe(|| {
            node.initialize(&self.init, |key, value| create(key, value, data))
        }));
        match made {
            Ok((waiting, created)) => {
                if waiting {
                    self.notify_waiters();
                }
                created
            }
            Err(payload) => {
                let mut table = lock(&self.table);
                let unlinked = table.unlink(node);
                // Under the lock, with the unlinking: a waiter that sees the failure finds the
                // key vacant when it looks again.
                let waiting = node.fail();
                drop(table);
                if waiting {
                    self.initialized.notify_all();
                }
                drop(unlinked);
                panic::resume_unwind(payload);
            }
        }
    }

    /// Releases one lease of `node`; `decide`, if given, answers for the predicate should this
    /// release bring the count to zero.
    ///
    /// A release that leaves other leases takes no lock. A release to zero takes the lock to
    /// lower the count, so that it is ordered with every lookup; then, if there is a predicate,
    /// releases the lock, asks the predicate, and takes the lock again to free the node only if
    /// it is still unleased and no later release to zero has happened meanwhile (that release
    /// asks for itself).
    pub(crate) fn release_node<D>(&self, node: &Arc<Node<K, V>>, decide: Option<D>)
    where
        K: Eq,
        D: FnOnce(&K, &V) -> bool,
    {
        let mut leases = node.leases.load(Ordering::Relaxed);
        while leases > 1 {
            match node.leases.compare_exchange(
                leases,
                leases - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => leases = now,
            }
        }
        let mut table = lock(&self.table);
        if node.leases.fetch_sub(1, Ordering::AcqRel) != 1 {
            // Leased again since the load above.
            return;
        }
        if decide.is_none() && self.cleanup.is_none() {
            // The default predicate: free, in the same critical section.
            let freed = table.unlink(node);
            drop(table);
            drop(freed);
            return;
        }
        let release = node.releases.load(Ordering::Relaxed) + 1;
        node.releases.store(release, Ordering::Relaxed);
        drop(table);
        // The count is zero before the predicate runs: if it panics, the entry stays allocated
        // with no leases.
        let free = match decide {
            Some(decide) => decide(&node.key, node.value()),
            None => self.should_free(&node.key, node.value()),
        };
        if free {
            self.free_if_unchanged(node, release);
        }
    }

    /// Frees `node` if it is unleased and its last release to zero is still `release`.
    fn free_if_unchanged(&self, node: &Node<K, V>, release: u64)
    where
        K: Eq,
    {
        let mut table = lock(&self.table);
        let unchanged = node.leases.load(Ordering::Relaxed) == 0
            && node.releases.load(Ordering::Relaxed) == release;
        let freed = if unchanged { table.unlink(node) } else { None };
        drop(table);
        drop(freed);
    }

    /// The function stored in [`Inner::release`].
    pub(crate) fn release_lease(&self, node: &Arc<Node<K, V>>)
    where
        K: Eq,
    {
        self.release_node(node, None::<fn(&K, &V) -> bool>);
    }
}

impl<K: Eq + Hash, V> Registry<K, V> {
    /// Creates a registry whose entries are freed as soon as their last lease is dropped.
    ///
    /// `init` creates a key's value on its first allocation. It runs without the registry's
    /// lock: it may use this registry for other keys, and callers of the same key wait for it.
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

impl<K: Eq + Hash, V, S: BuildHasher> Registry<K, V, S> {
    /// Leases `key`, creating its value with the initializer if the key is not allocated.
    ///
    /// The key is hashed once. If another thread is creating the key's value, this call waits
    /// for it and leases that value. The initializer runs without the registry's lock; if it
    /// panics, the panic propagates here and nothing is allocated.
    ///
    /// # Panics
    ///
    /// When called from the initializer that is creating `key`'s value (the value cannot exist
    /// before the initializer returns), or when the initializer panics.
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
        let hash = self.inner.hasher.hash_one(&key);
        self.inner.allocate(hash, key, (), |_, _, ()| ()).0
    }

    /// Leases `key` like [`allocate`](Self::allocate); if this call creates the key's value,
    /// `create` gets it mutably, with `data`, right after the initializer made it and before any
    /// other caller can see it, and returns `Ok` with what `create` returned. If the key was
    /// allocated already, `data` comes back as `Err`.
    ///
    /// For a layer above that would otherwise lock the value it just created: pub-sub
    /// registers a fresh topic's first listener this way. `create` runs without the registry's
    /// lock, as part of the initializer (callers of the key wait for it, and a panic in it is
    /// the initializer's panic: nothing is allocated).
    ///
    /// # Panics
    ///
    /// As [`allocate`](Self::allocate), and when `create` panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let registry = Registry::new(|_: &&str| Vec::<u32>::new());
    /// let (first, created) = registry.allocate_with("k", 7, |_, list, item| list.push(item));
    /// assert_eq!((created, first.as_slice()), (Ok(()), &[7][..]));
    /// let (_again, created) = registry.allocate_with("k", 8, |_, list, item| list.push(item));
    /// assert_eq!(created, Err(8)); // allocated already: the data comes back
    /// ```
    pub fn allocate_with<D, R>(
        &self,
        key: K,
        data: D,
        create: impl FnOnce(&K, &mut V, D) -> R,
    ) -> (Lease<K, V, S>, Result<R, D>) {
        let hash = self.inner.hasher.hash_one(&key);
        self.inner.allocate(hash, key, data, create)
    }

    /// Leases `key` only if it is allocated now; never creates a value.
    ///
    /// This also revives an entry kept by the cleanup predicate. If another thread is creating
    /// the key's value, this call waits for it.
    ///
    /// # Panics
    ///
    /// When called from the initializer that is creating `key`'s value.
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
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<Lease<K, V, S>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.inner.hasher.hash_one(key);
        self.inner.lookup(hash, key)
    }

    /// Leases `key` if it is allocated, or returns it with its hash so that the caller can
    /// decide, without the lock and without hashing again, whether to allocate it.
    ///
    /// # Panics
    ///
    /// As [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::{Entry, Registry};
    ///
    /// let registry = Registry::new(|key: &u32| key * 2);
    /// let lease = match registry.entry(21) {
    ///     Entry::Allocated(lease) => lease,
    ///     Entry::Vacant(vacant) if *vacant.key() > 20 => vacant.allocate(),
    ///     Entry::Vacant(_) => unreachable!(),
    /// };
    /// assert_eq!(*lease, 42);
    /// ```
    #[inline]
    pub fn entry(&self, key: K) -> Entry<'_, K, V, S> {
        let hash = self.inner.hasher.hash_one(&key);
        match self.inner.lookup(hash, &key) {
            Some(lease) => Entry::Allocated(lease),
            None => Entry::Vacant(VacantEntry {
                registry: self,
                hash,
                key,
            }),
        }
    }

    /// Calls `f` with `key`'s value if the key is allocated now, without leasing it; returns
    /// what `f` returned.
    ///
    /// Cheaper than [`get`](Self::get) for a quick read: no lease to release, no cleanup
    /// predicate asked. `f` runs without the registry's lock and may use the registry. If
    /// another thread is creating the key's value, this call waits for it, like `get`.
    ///
    /// # Panics
    ///
    /// When called from the initializer that is creating `key`'s value.
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
        let hash = self.inner.hasher.hash_one(key);
        let node = loop {
            let table = lock(&self.inner.table);
            let node = Arc::clone(table.get(hash, key)?);
            if node.phase() == Phase::Ready {
                break node;
            }
            // Not counted: a read holds no lease. Should the key be freed while this waits,
            // the value read is the last it had.
            let (table, ready) = self.inner.wait_for(table, &node, false);
            drop(table);
            if ready {
                break node;
            }
            // The initializer panicked: look again.
        };
        // Dropped after `f`, without the lock: should the key have been freed meanwhile, this
        // is the value's last holder.
        Some(f(node.value()))
    }

    /// Whether `key` is allocated now: leased, kept by the predicate, or having its value
    /// created.
    pub fn is_allocated<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.inner.hasher.hash_one(key);
        lock(&self.inner.table).get(hash, key).is_some()
    }

    /// Frees every unleased entry whose cleanup predicate now says "free"; returns how many were
    /// freed.
    ///
    /// The predicate runs once per unleased entry, without the lock. An entry leased again
    /// while its predicate runs is not freed. If the predicate panics, the panic propagates
    /// here; entries already freed stay freed and the others stay allocated.
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
        let unleased: Vec<_> = lock(&self.inner.table)
            .nodes()
            .filter(|node| node.leases.load(Ordering::Relaxed) == 0)
            .map(|node| (Arc::clone(node), node.releases.load(Ordering::Relaxed)))
            .collect();
        let mut freed = 0;
        for (node, release) in unleased {
            if cleanup(&node.key, node.value()) {
                let mut table = lock(&self.inner.table);
                let unchanged = node.leases.load(Ordering::Relaxed) == 0
                    && node.releases.load(Ordering::Relaxed) == release;
                let unlinked = if unchanged { table.unlink(&node) } else { None };
                drop(table);
                freed += usize::from(unlinked.is_some());
            }
        }
        freed
    }

    /// Releases spare capacity of the map, so that an emptied registry retains no entry storage.
    pub fn shrink_to_fit(&self) {
        lock(&self.inner.table).shrink_to_fit();
    }
}

impl<K, V, S> Registry<K, V, S> {
    /// Number of allocated keys: leased, kept by the predicate, or having their value created.
    pub fn len(&self) -> usize {
        lock(&self.inner.table).len()
    }

    /// Whether no key is allocated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys the registry can hold without reallocating its map.
    pub fn capacity(&self) -> usize {
        lock(&self.inner.table).capacity()
    }

    /// Calls `f` with every key allocated at one moment and its value.
    ///
    /// The keys are collected under the lock; `f` runs without it, so it may use this registry.
    /// A key whose value is still being created is waited for, as by [`peek`](Self::peek) (and
    /// skipped when the caller is that key's initializer): a key allocated before this call is
    /// visited, with its value. The values are read as they are when `f` runs.
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
        let nodes: Vec<_> = lock(&self.inner.table).nodes().cloned().collect();
        for node in &nodes {
            if node.phase() != Phase::Ready {
                if node.initialized_by_caller() {
                    continue;
                }
                let table = lock(&self.inner.table);
                let (table, ready) = self.inner.wait_for(table, node, false);
                drop(table);
                if !ready {
                    continue;
                }
            }
            f(&node.key, node.value());
        }
    }
}

impl<'a, K: Eq, V, S> VacantEntry<'a, K, V, S> {
    /// The key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Gives the key back.
    pub fn into_key(self) -> K {
        self.key
    }

    /// Leases the key, creating its value unless another caller allocated it since
    /// [`Registry::entry`] looked; the key is not hashed again.
    ///
    /// # Panics
    ///
    /// As [`Registry::allocate`].
    pub fn allocate(self) -> Lease<K, V, S> {
        self.registry
            .inner
            .allocate(self.hash, self.key, (), |_, _, ()| ())
            .0
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
        match try_lock(&self.inner.table) {
            Some(table) => debug.field("len", &table.len()),
            None => debug.field("len", &format_args!("<locked>")),
        };
        debug.finish_non_exhaustive()
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for Entry<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allocated(lease) => f.debug_tuple("Allocated").field(lease).finish(),
            Self::Vacant(vacant) => f.debug_tuple("Vacant").field(vacant).finish(),
        }
    }
}

impl<K: fmt::Debug, V, S> fmt::Debug for VacantEntry<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VacantEntry")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
