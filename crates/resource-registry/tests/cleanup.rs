//! The cleanup predicate: when it runs, what it sees, what keeping an entry means, and `sweep`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use keyrunner_resource_registry::Registry;

/// A registry of numbered values whose predicate frees only when `free` is set, counting calls.
struct Kept {
    registry: Registry<u32, usize>,
    free: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

fn kept() -> Kept {
    let free = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let inits = AtomicUsize::new(0);
    let registry = Registry::builder(move |_: &u32| inits.fetch_add(1, Ordering::SeqCst))
        .cleanup({
            let free = Arc::clone(&free);
            let calls = Arc::clone(&calls);
            move |_, _| {
                calls.fetch_add(1, Ordering::SeqCst);
                free.load(Ordering::SeqCst)
            }
        })
        .build();
    Kept {
        registry,
        free,
        calls,
    }
}

#[test]
fn predicate_receives_the_key_and_its_value() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let registry = Registry::builder(|key: &String| format!("value of {key}"))
        .cleanup({
            let seen = Arc::clone(&seen);
            move |key, value| {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((key.clone(), value.clone()));
                true
            }
        })
        .build();
    drop(registry.allocate("a".to_owned()));
    drop(registry.allocate("b".to_owned()));
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(
        seen,
        [
            ("a".to_owned(), "value of a".to_owned()),
            ("b".to_owned(), "value of b".to_owned()),
        ]
    );
}

#[test]
fn predicate_runs_once_per_release_to_zero_and_never_before() {
    let Kept {
        registry, calls, ..
    } = kept();
    let first = registry.allocate(1);
    let second = registry.allocate(1);
    let third = first.clone();
    drop(first);
    drop(second);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "leases remain");
    drop(third);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    drop(registry.get(&1).expect("kept"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "each release to zero asks again"
    );
}

#[test]
fn kept_key_stays_allocated_unleased_and_returns_the_same_value() {
    let Kept { registry, free, .. } = kept();
    let lease = registry.allocate(1);
    assert_eq!(*lease, 0);
    drop(lease);
    assert!(registry.is_allocated(&1));
    assert_eq!(registry.len(), 1);

    let again = registry.allocate(1);
    assert_eq!(*again, 0, "re-allocating a kept key returns its value");
    assert_eq!(
        *registry.allocate(2),
        1,
        "the initializer ran only for the new key"
    );

    free.store(true, Ordering::SeqCst);
    drop(again);
    assert!(!registry.is_allocated(&1), "a later release frees it");
    assert_eq!(*registry.allocate(1), 2, "a freed key gets a fresh value");
}

#[test]
fn sweep_frees_kept_keys_once_the_predicate_flips() {
    let Kept {
        registry,
        free,
        calls,
    } = kept();
    drop(registry.allocate(1));
    drop(registry.allocate(2));
    assert_eq!(registry.len(), 2);
    let calls_before = calls.load(Ordering::SeqCst);

    assert_eq!(registry.sweep(), 0, "the predicate still keeps them");
    assert_eq!(calls.load(Ordering::SeqCst), calls_before + 2);
    assert_eq!(registry.len(), 2);

    free.store(true, Ordering::SeqCst);
    assert_eq!(registry.sweep(), 2);
    assert!(registry.is_empty());
    assert_eq!(registry.sweep(), 0, "nothing is freed twice");
}

#[test]
fn sweep_never_touches_leased_keys() {
    let Kept {
        registry,
        free,
        calls,
    } = kept();
    let held = registry.allocate(1);
    drop(registry.allocate(2));
    free.store(true, Ordering::SeqCst);
    let calls_before = calls.load(Ordering::SeqCst);

    assert_eq!(registry.sweep(), 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        calls_before + 1,
        "the predicate is not asked about leased keys"
    );
    assert!(registry.is_allocated(&1));
    assert!(!registry.is_allocated(&2));
    assert_eq!(*held, 0);
    drop(held);
    assert!(registry.is_empty());
}

#[test]
fn default_predicate_always_frees() {
    let registry = Registry::new(|key: &u32| *key);
    drop(registry.allocate(1));
    assert!(!registry.is_allocated(&1));
    assert_eq!(registry.sweep(), 0);
}

/// A value whose destructor records how the registry looks, to prove it runs outside the lock.
struct Probe {
    registry: Arc<OnceLock<Registry<u32, Probe>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.get() {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{registry:?}"));
        }
    }
}

#[test]
fn values_are_dropped_after_the_lock_is_released() {
    let slot = Arc::new(OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::new(AtomicBool::new(false));
    let registry = Registry::builder({
        let slot = Arc::clone(&slot);
        let seen = Arc::clone(&seen);
        move |_: &u32| Probe {
            registry: Arc::clone(&slot),
            seen: Arc::clone(&seen),
        }
    })
    .cleanup({
        let keep = Arc::clone(&keep);
        move |_, _| !keep.load(Ordering::SeqCst)
    })
    .build();
    assert!(slot.set(registry.clone()).is_ok());

    drop(registry.allocate(1)); // freed by the release
    keep.store(true, Ordering::SeqCst);
    drop(registry.allocate(2)); // kept...
    keep.store(false, Ordering::SeqCst);
    assert_eq!(registry.sweep(), 1); // ...then freed by the sweep

    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(
        seen,
        ["Registry { len: 0, .. }", "Registry { len: 0, .. }"],
        "a value's destructor can use the registry"
    );
}
