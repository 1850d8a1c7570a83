//! The lease guard: cloning counts, dropping releases, and it owns its registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyrunner_resource_registry::{Lease, Registry};

#[test]
fn clone_of_a_lease_counts_as_an_allocation() {
    let inits = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new({
        let inits = Arc::clone(&inits);
        move |key: &u32| {
            inits.fetch_add(1, Ordering::SeqCst);
            *key
        }
    });
    let original = registry.allocate(1);
    let clone = original.clone();
    assert_eq!(clone.key(), original.key());
    assert!(std::ptr::eq(&*original, &*clone));

    drop(original);
    assert!(registry.is_allocated(&1), "the clone still holds the key");
    let clone_of_clone = clone.clone();
    drop(clone);
    assert!(registry.is_allocated(&1));
    drop(clone_of_clone);
    assert!(!registry.is_allocated(&1));
    assert_eq!(
        inits.load(Ordering::SeqCst),
        1,
        "cloning never re-initializes"
    );
}

#[test]
fn lease_derefs_to_the_value_and_knows_its_key() {
    let registry = Registry::new(|key: &String| format!("value of {key}"));
    let lease = registry.allocate("k".to_owned());
    assert_eq!(lease.key(), "k");
    assert_eq!(lease.as_str(), "value of k");
    assert_eq!(lease.as_ref(), "value of k");
}

#[test]
fn lease_outlives_every_registry_handle() {
    let registry = Registry::new(|key: &u32| key + 1);
    let lease: Lease<u32, u32> = registry.allocate(1);
    drop(registry);
    assert_eq!(*lease, 2);

    let registry = lease.registry();
    assert!(registry.is_allocated(&1));
    let again = registry.get(&1).expect("still leased");
    drop(lease);
    assert!(registry.is_allocated(&1));
    drop(again);
    assert!(registry.is_empty());
}

#[test]
fn lease_registry_is_the_same_registry() {
    let registry = Registry::new(|key: &u32| *key);
    let lease = registry.allocate(1);
    let _other = lease.registry().allocate(2);
    assert_eq!(registry.len(), 2);
}

#[test]
fn lease_debug_shows_key_and_value() {
    let registry = Registry::new(|key: &u32| format!("#{key}"));
    let lease = registry.allocate(7);
    assert_eq!(
        format!("{lease:?}"),
        r##"Lease { key: 7, value: "#7", .. }"##
    );
}
