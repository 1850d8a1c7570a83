//! The lease: a counted, shared handle on one key's value.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::ops::Deref;

use crate::node::Node;
use crate::registry::{Inner, Registry};
use crate::sync::{Arc, Ordering};

/// A lease on one key of a [`Registry`]: dereferences to the key's value.
///
/// Each lease counts as one allocation of its key; [`Clone`] counts as another. Dropping the last
/// lease of a key frees the key's entry when the registry's cleanup predicate says so. A lease
/// owns a handle to its registry, so it is `'static` when `K`, `V` and `S` are, and it can outlive
/// every [`Registry`] handle.
///
/// Dereferencing and cloning take no lock; so does dropping a lease that is not the key's last.
/// A lease is `Send` and `Sync` when `K` and `V` are `Send + Sync` and `S` is `Send + Sync`.
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
    node: Arc<Node<K, V>>,
    /// Set by [`release_with`](Self::release_with), which released already.
    released: bool,
}

impl<K, V, S> Lease<K, V, S> {
    /// A lease on `node`, whose count already includes it.
    pub(crate) fn new(registry: Arc<Inner<K, V, S>>, node: Arc<Node<K, V>>) -> Self {
        Self {
            registry,
            node,
            released: false,
        }
    }

    /// The leased key.
    pub fn key(&self) -> &K {
        &self.node.key
    }

    /// A handle to the registry this lease belongs to.
    pub fn registry(&self) -> Registry<K, V, S> {
        Registry {
            inner: Arc::clone(&self.registry),
        }
    }
}

impl<K: Eq, V, S> Lease<K, V, S> {
    /// Releases this lease like dropping it, except that should it be the key's last, `cleanup`
    /// decides whether the entry is freed (`true`), instead of the registry's predicate.
    ///
    /// For a caller that already knows the answer, or knows better: a hold taken only to put
    /// something in a value that the caller has already judged worth keeping.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyrunner_resource_registry::Registry;
    ///
    /// let registry = Registry::new(|_: &u8| ());
    /// registry.allocate(1).release_with(|_, _| false); // kept, whatever the predicate says
    /// assert!(registry.is_allocated(&1));
    /// drop(registry.get(&1)); // the registry's predicate (always free) decides this time
    /// assert!(registry.is_empty());
    /// ```
    pub fn release_with(mut self, cleanup: impl FnOnce(&K, &V) -> bool) {
        // Set first: should `cleanup` panic, the destructor must not release again.
        self.released = true;
        self.registry.release_node(&self.node, Some(cleanup));
    }
}

impl<K, V, S> Deref for Lease<K, V, S> {
    type Target = V;

    fn deref(&self) -> &V {
        self.node.value()
    }
}

impl<K, V, S> AsRef<V> for Lease<K, V, S> {
    fn as_ref(&self) -> &V {
        self.node.value()
    }
}

impl<K, V, S> Clone for Lease<K, V, S> {
    /// Leases the same key again: the key stays allocated until both leases are dropped.
    fn clone(&self) -> Self {
        // This lease keeps the count above zero, so raising it needs no lock. Cannot overflow:
        // every lease also holds a strong count of the node, and `Arc` aborts first.
        self.node.leases.fetch_add(1, Ordering::Relaxed);
        Self::new(Arc::clone(&self.registry), Arc::clone(&self.node))
    }
}

impl<K, V, S> Drop for Lease<K, V, S> {
    /// Releases the key; frees its entry if this was the last lease and the cleanup predicate
    /// says so. A panic in the predicate propagates from here.
    fn drop(&mut self) {
        if !self.released {
            (self.registry.release)(&self.registry, &self.node);
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for Lease<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.node.key)
            .field("value", self.node.value())
            .finish_non_exhaustive()
    }
}
