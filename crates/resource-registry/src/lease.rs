//! The lease: a counted, shared handle on one key's value.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::Deref;

use crate::registry::{Inner, Registry, Shared};
use crate::sync::{Arc, lock};

/// A lease on one key of a [`Registry`]: dereferences to the key's value.
///
/// Each lease counts as one allocation of its key; [`Clone`] counts as another. Dropping the last
/// lease of a key frees the key's entry when the registry's cleanup predicate says so. A lease
/// owns a handle to its registry, so it is `'static` when `K`, `V` and `S` are, and it can outlive
/// every [`Registry`] handle.
///
/// Dereferencing takes no lock. A lease is `Send` when `K: Send`, `V: Send + Sync` and `S: Send`,
/// and `Sync` when `K: Sync` too.
///
/// # Examples
///
/// ```
/// use keyrunner_resource_registry::Registry;
///
/// let registry = Registry::new(|key: &&str| key.to_uppercase());
/// let lease = registry.allocate("hello");
/// let again = lease.clone(); // a second allocation of "hello"
/// assert_eq!((*lease.key(), again.as_str()), ("hello", "HELLO"));
///
/// drop(lease);
/// assert!(registry.is_allocated("hello"));
/// drop(again);
/// assert!(!registry.is_allocated("hello"));
/// ```
#[must_use = "dropping a lease releases its key, which may free the key's value"]
#[clippy::has_significant_drop]
pub struct Lease<K, V, S = RandomState> {
    registry: Arc<Inner<K, V, S>>,
    shared: Arc<Shared<K, V>>,
}

impl<K, V, S> Lease<K, V, S> {
    pub(crate) fn new(registry: Arc<Inner<K, V, S>>, shared: Arc<Shared<K, V>>) -> Self {
        Self { registry, shared }
    }

    /// The leased key.
    pub fn key(&self) -> &K {
        &self.shared.key
    }

    /// A handle to the registry this lease belongs to.
    pub fn registry(&self) -> Registry<K, V, S> {
        Registry {
            inner: Arc::clone(&self.registry),
        }
    }
}

impl<K, V, S> Deref for Lease<K, V, S> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.shared.value
    }
}

impl<K, V, S> AsRef<V> for Lease<K, V, S> {
    fn as_ref(&self) -> &V {
        &self.shared.value
    }
}

impl<K: Eq + Hash + Clone, V, S: BuildHasher> Clone for Lease<K, V, S> {
    /// Leases the same key again: the key stays allocated until both leases are dropped.
    fn clone(&self) -> Self {
        {
            let entries = lock(&self.registry.entries);
            let entry = entries.get(&self.shared.key).expect(
                "a leased key is in the map because entries are removed only at zero leases",
            );
            // Cannot overflow: every lease also holds a strong count of the value, and `Arc`
            // aborts before its count reaches `usize::MAX`.
            entry.leases.set(entry.leases.get() + 1);
        }
        Self::new(Arc::clone(&self.registry), Arc::clone(&self.shared))
    }
}

impl<K, V, S> Drop for Lease<K, V, S> {
    /// Releases the key; frees its entry if this was the last lease and the cleanup predicate
    /// says so. A panic in the predicate propagates from here.
    fn drop(&mut self) {
        (self.registry.release)(&self.registry, &self.shared.key);
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for Lease<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.shared.key)
            .field("value", &self.shared.value)
            .finish_non_exhaustive()
    }
}
