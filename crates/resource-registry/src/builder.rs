//! Configuration of a registry: its cleanup predicate and hasher.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::registry::{Cleanup, Init, Inner, Registry};
use crate::sync::{Arc, Condvar, Mutex};
use crate::table::Table;

/// Builds a [`Registry`] with a cleanup predicate or a custom hasher.
///
/// Start one with [`Registry::builder`].
///
/// # Examples
///
/// ```
/// use std::collections::hash_map::RandomState;
/// use std::sync::Mutex;
/// use keyrunner_resource_registry::Registry;
///
/// // Keep a key's log while it holds lines, even when nobody leases it.
/// let logs = Registry::builder(|_: &u32| Mutex::new(Vec::<String>::new()))
///     .cleanup(|_key, log| log.lock().is_ok_and(|lines| lines.is_empty()))
///     .hasher(RandomState::new())
///     .build();
///
/// drop(logs.allocate(1));
/// assert!(!logs.is_allocated(&1));
/// logs.allocate(2).lock().unwrap().push("started".to_owned());
/// assert!(logs.is_allocated(&2));
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V, S = RandomState> {
    init: Init<K, V>,
    cleanup: Option<Cleanup<K, V>>,
    hasher: S,
}

impl<K, V> Builder<K, V> {
    pub(crate) fn new(init: Init<K, V>) -> Self {
        Self {
            init,
            cleanup: None,
            hasher: RandomState::new(),
        }
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// Sets the cleanup predicate: `pred(key, value) == true` means "free the entry".
    ///
    /// It is asked when the last lease of a key is dropped and, for unleased entries, on each
    /// [`Registry::sweep`], exactly once per such release. An entry it keeps stays allocated
    /// with no leases. The default frees always. The predicate runs without the registry's lock:
    /// it may read this registry and allocate or release keys, its own included (an allocation
    /// made meanwhile keeps the entry, whatever the predicate answers). If it panics, the panic
    /// propagates to whoever dropped the lease or swept, and the entry stays allocated.
    pub fn cleanup(mut self, pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.cleanup = Some(Box::new(pred));
        self
    }

    /// Sets the hasher the registry hashes keys with, like
    /// [`HashMap::with_hasher`](std::collections::HashMap::with_hasher).
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> Builder<K, V, S2> {
        Builder {
            init: self.init,
            cleanup: self.cleanup,
            hasher,
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> Builder<K, V, S> {
    /// Creates the registry.
    pub fn build(self) -> Registry<K, V, S> {
        Registry {
            inner: Arc::new(Inner {
                table: Mutex::new(Table::new()),
                initialized: Condvar::new(),
                hasher: self.hasher,
                init: self.init,
                cleanup: self.cleanup,
                release: Inner::release_lease,
            }),
        }
    }
}

impl<K, V, S> fmt::Debug for Builder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("cleanup", &self.cleanup.is_some())
            .finish_non_exhaustive()
    }
}
