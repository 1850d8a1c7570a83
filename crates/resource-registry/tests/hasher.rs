//! The registry is generic over its hasher, like `HashMap`.

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyrunner_resource_registry::Registry;

/// Builds `DefaultHasher`s and counts how many it built.
#[derive(Clone, Default)]
struct CountingHasher {
    built: Arc<AtomicUsize>,
}

impl BuildHasher for CountingHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        self.built.fetch_add(1, Ordering::SeqCst);
        DefaultHasher::new()
    }
}

#[test]
fn registry_hashes_with_the_given_hasher() {
    let hasher = CountingHasher::default();
    let registry: Registry<String, usize, CountingHasher> =
        Registry::builder(|key: &String| key.len())
            .hasher(hasher.clone())
            .build();

    let lease = registry.allocate("abc".to_owned());
    assert!(hasher.built.load(Ordering::SeqCst) > 0);

    let before = hasher.built.load(Ordering::SeqCst);
    assert!(registry.is_allocated("abc"));
    assert_eq!(registry.get("abc").map(|lease| *lease), Some(3));
    assert!(hasher.built.load(Ordering::SeqCst) > before);

    drop(lease);
    assert!(registry.is_empty());
}

#[test]
fn custom_hasher_registry_keeps_the_contract() {
    let registry = Registry::builder(|key: &u64| key * 2)
        .cleanup(|key, _| key % 2 == 0)
        .hasher(CountingHasher::default())
        .build();
    let leases: Vec<_> = (0..100).map(|key| registry.allocate(key)).collect();
    assert!(leases.iter().all(|lease| **lease == lease.key() * 2));
    drop(leases);
    assert_eq!(registry.len(), 50, "odd keys are kept");
    registry.for_each(|key, _| assert_eq!(key % 2, 1));
}
