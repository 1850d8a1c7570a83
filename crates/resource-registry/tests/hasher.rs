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

#[test]
fn each_operation_hashes_its_key_once_and_a_release_never_does() {
    let hasher = CountingHasher::default();
    let registry = Registry::builder(|key: &u64| key * 2)
        .cleanup(|key, _| *key != 7)
        .hasher(hasher.clone())
        .build();
    let hashes = |f: &mut dyn FnMut()| {
        let before = hasher.built.load(Ordering::SeqCst);
        f();
        hasher.built.load(Ordering::SeqCst) - before
    };

    let mut lease = None;
    assert_eq!(
        hashes(&mut || lease = Some(registry.allocate(1))),
        1,
        "allocate, fresh key"
    );
    assert_eq!(
        hashes(&mut || drop(registry.allocate(1))),
        1,
        "allocate, allocated key"
    );
    assert_eq!(hashes(&mut || drop(registry.get(&1))), 1, "get");
    assert_eq!(
        hashes(&mut || assert!(registry.is_allocated(&1))),
        1,
        "is_allocated"
    );
    let mut clone = None;
    assert_eq!(hashes(&mut || clone = lease.clone()), 0, "clone");
    assert_eq!(hashes(&mut || drop(clone.take())), 0, "release");
    assert_eq!(
        hashes(&mut || drop(lease.take())),
        0,
        "release to zero, freed"
    );
    assert!(registry.is_empty());
    assert_eq!(
        hashes(&mut || drop(registry.allocate(7))),
        1,
        "allocate and release, kept"
    );
    assert_eq!(
        hashes(&mut || match registry.entry(2) {
            keyrunner_resource_registry::Entry::Vacant(vacant) => drop(vacant.allocate()),
            keyrunner_resource_registry::Entry::Allocated(_) => unreachable!(),
        }),
        1,
        "entry, then allocate the vacant key"
    );
    assert_eq!(registry.sweep(), 0);
    assert_eq!(hashes(&mut || assert_eq!(registry.sweep(), 0)), 0, "sweep");
}
