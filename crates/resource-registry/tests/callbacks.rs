//! Callbacks may call back: the initializer and the cleanup predicate run without the registry's
//! lock, so they may read the registry and use other keys; a slow callback stalls only the
//! callers of its own key; an initializer that leases its own key panics instead of hanging.
//!
//! Each liveness claim runs under a watchdog ([`common::within_deadline`]): a deadlock fails the
//! test instead of hanging it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;

use keyrunner_resource_registry::{Entry, Lease, Registry};

mod common;
use common::{message, within_deadline};

/// A registry handle its own callbacks can reach, filled in once the registry is built.
type Slot<V> = Arc<OnceLock<Registry<u32, V>>>;

fn get<V>(slot: &OnceLock<Registry<u32, V>>) -> &Registry<u32, V> {
    slot.get()
        .expect("the registry is stored before it is used")
}

#[test]
fn an_initializer_may_read_the_registry_and_allocate_other_keys() {
    within_deadline("nested initializers", || {
        let slot: Slot<u32> = Arc::default();
        let registry = Registry::new({
            let slot = Arc::clone(&slot);
            move |key: &u32| {
                if *key >= 1_000 {
                    return 0;
                }
                let registry = get(&slot);
                // Reads, including of its own key, which counts as allocated already.
                assert!(registry.is_allocated(key));
                assert!(!registry.is_empty());
                assert_eq!(registry.peek(&1_000, |value| *value), None);
                drop(registry.get(&1_000));
                // A key allocated and released by this initializer is freed again.
                drop(registry.allocate(1_000 + key));
                assert!(!registry.is_allocated(&(1_000 + key)));
                // A chain: each value is one more than the key below it, which this
                // initializer allocates (and its initializer the next one down).
                match key.checked_sub(1) {
                    None => 0,
                    Some(below) => *registry.allocate(below) + 1,
                }
            }
        });
        assert!(slot.set(registry.clone()).is_ok());

        let top = registry.allocate(5);
        assert_eq!(*top, 5);
        // The keys below were leased only by the initializers, and freed when they returned.
        assert_eq!(registry.len(), 1);
        drop(top);
        assert!(registry.is_empty());
    });
}

#[test]
fn a_cleanup_predicate_may_read_the_registry_and_use_any_key() {
    within_deadline("a predicate using its registry", || {
        let slot: Slot<u32> = Arc::default();
        // A lease the predicate takes on the key it judges, to keep it.
        let revived: Arc<Mutex<Option<Lease<u32, u32>>>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let registry = Registry::builder(|key: &u32| key * 10)
            .cleanup({
                let (slot, revived, calls) =
                    (Arc::clone(&slot), Arc::clone(&revived), Arc::clone(&calls));
                move |key, value| {
                    let call = calls.fetch_add(1, Ordering::SeqCst);
                    if *key >= 100 {
                        return true;
                    }
                    let registry = get(&slot);
                    assert!(
                        registry.is_allocated(key),
                        "an unleased key is still allocated"
                    );
                    assert_eq!(registry.peek(key, |value| *value), Some(*value));
                    // Other keys: allocated and released (their own predicate runs, nested).
                    drop(registry.allocate(100 + key));
                    assert!(!registry.is_allocated(&(100 + key)));
                    if call == 0 {
                        // Lease the judged key again: it survives, whatever this call answers.
                        *revived.lock().unwrap_or_else(PoisonError::into_inner) = registry.get(key);
                    }
                    true
                }
            })
            .build();
        assert!(slot.set(registry.clone()).is_ok());

        drop(registry.allocate(1));
        assert!(
            registry.is_allocated(&1),
            "leased again while its predicate ran"
        );
        let lease = revived
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        assert_eq!(lease.as_deref(), Some(&10));
        let before = calls.load(Ordering::SeqCst);
        drop(lease);
        assert!(
            calls.load(Ordering::SeqCst) > before,
            "the second release to zero asked again"
        );
        assert!(registry.is_empty());
    });
}

#[test]
fn an_initializer_that_leases_its_own_key_panics_instead_of_hanging() {
    type Lookup = fn(&Registry<u32, u32>, u32);
    let lookups: [(&str, Lookup); 4] = [
        ("allocate", |registry, key| drop(registry.allocate(key))),
        ("get", |registry, key| drop(registry.get(&key))),
        ("entry", |registry, key| drop(registry.entry(key))),
        ("peek", |registry, key| {
            registry.peek(&key, |_| ());
        }),
    ];
    for (name, lookup) in lookups {
        let payload = within_deadline(name, move || {
            let slot: Slot<u32> = Arc::default();
            let registry = Registry::new({
                let slot = Arc::clone(&slot);
                move |key: &u32| {
                    lookup(get(&slot), *key);
                    *key
                }
            });
            assert!(slot.set(registry.clone()).is_ok());
            let payload = catch_unwind(AssertUnwindSafe(|| registry.allocate(7)))
                .expect_err("the initializer's own lookup panics");
            // Nothing was allocated, and the registry works.
            assert!(registry.is_empty());
            assert_eq!(registry.peek(&7, |value| *value), None);
            message(&*payload).to_owned()
        });
        assert!(
            payload.contains("initializer") && payload.contains("its own key"),
            "{name}: {payload}"
        );
    }
}

#[test]
fn a_slow_initializer_stalls_only_the_callers_of_its_key() {
    let (started, initializing) = mpsc::channel::<()>();
    let (finish, go) = mpsc::channel::<()>();
    let go = Mutex::new(go);
    let inits = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new({
        let inits = Arc::clone(&inits);
        move |key: &u32| {
            inits.fetch_add(1, Ordering::SeqCst);
            if *key == 1 {
                let _ = started.send(());
                // Blocks until the test lets it finish: key 1 is slow.
                let _ = go.lock().unwrap_or_else(PoisonError::into_inner).recv();
            }
            Box::new(*key)
        }
    });

    let first = thread::spawn({
        let registry = registry.clone();
        move || registry.allocate(1)
    });
    initializing.recv().expect("the slow initializer started");

    // Everything else goes on meanwhile.
    let registry_b = registry.clone();
    within_deadline("other keys during a slow initializer", move || {
        let two = registry_b.allocate(2);
        assert_eq!(**two, 2);
        assert_eq!(registry_b.get(&2).as_deref().map(|value| **value), Some(2));
        assert!(
            registry_b.is_allocated(&1),
            "a key counts as allocated while it is created"
        );
        assert_eq!(registry_b.len(), 2);
        drop(two);
        assert!(!registry_b.is_allocated(&2));
    });

    // A second caller of key 1 waits, then gets the value the first initializer made.
    let second = thread::spawn({
        let registry = registry.clone();
        move || registry.allocate(1)
    });
    let reader = thread::spawn({
        let registry = registry.clone();
        move || registry.peek(&1, |value| std::ptr::from_ref(&**value).addr())
    });
    finish.send(()).expect("the initializer waits for this");
    let first = first.join().expect("the first caller gets the value");
    let second = second.join().expect("the second caller gets the value");
    let read = reader.join().expect("the reader gets the value");
    assert!(
        std::ptr::eq(&**first, &**second),
        "one value for both callers"
    );
    assert_eq!(
        read,
        Some(std::ptr::from_ref(&**first).addr()),
        "and for the reader"
    );
    assert_eq!(
        inits.load(Ordering::SeqCst),
        2,
        "key 1 was initialized once, key 2 once"
    );
    drop((first, second));
    assert!(registry.is_empty());
}

#[test]
fn a_slow_cleanup_predicate_stalls_nobody() {
    let (judging, judged) = mpsc::channel::<()>();
    let (finish, go) = mpsc::channel::<()>();
    let go = Mutex::new(go);
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = Registry::builder(|key: &u32| *key)
        .cleanup({
            let calls = Arc::clone(&calls);
            move |key, _| {
                if *key == 1 && calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    let _ = judging.send(());
                    let _ = go.lock().unwrap_or_else(PoisonError::into_inner).recv();
                }
                true
            }
        })
        .build();

    let releaser = thread::spawn({
        let lease = registry.allocate(1);
        move || drop(lease)
    });
    judged.recv().expect("the predicate started");

    // Neither the key being judged nor any other waits for the predicate.
    let registry_b = registry.clone();
    let revived = within_deadline("allocations during a slow predicate", move || {
        drop(registry_b.allocate(2));
        assert!(!registry_b.is_allocated(&2));
        assert_eq!(registry_b.peek(&1, |value| *value), Some(1));
        registry_b.allocate(1)
    });

    finish.send(()).expect("the predicate waits for this");
    releaser.join().expect("the release finishes");
    assert!(
        registry.is_allocated(&1),
        "leased again while judged: not freed"
    );
    assert_eq!(*revived, 1);
    drop(revived);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one question per release to zero"
    );
    assert!(registry.is_empty());
}

#[test]
fn entry_leases_an_allocated_key_and_allocates_a_vacant_one_without_hashing_again() {
    let registry = Registry::new(|key: &u32| key + 1);
    let held = registry.allocate(1);
    let Entry::Allocated(lease) = registry.entry(1) else {
        panic!("key 1 is allocated");
    };
    assert!(std::ptr::eq(&*lease, &*held));
    let Entry::Vacant(vacant) = registry.entry(2) else {
        panic!("key 2 is not allocated");
    };
    assert_eq!(*vacant.key(), 2);
    assert!(
        !registry.is_allocated(&2),
        "a vacant entry allocates nothing"
    );
    let two = vacant.allocate();
    assert_eq!(*two, 3);
    let Entry::Vacant(vacant) = registry.entry(3) else {
        panic!("key 3 is not allocated");
    };
    assert_eq!(vacant.into_key(), 3);
    drop((held, lease, two));
    assert!(registry.is_empty());
}
