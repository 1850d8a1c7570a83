//! A panicking initializer or predicate propagates and leaves the registry consistent.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use keyrunner_resource_registry::Registry;

mod common;
use common::message;

#[test]
fn panicking_initializer_allocates_nothing_and_propagates() {
    let fail = Arc::new(AtomicBool::new(false));
    let registry = Registry::new({
        let fail = Arc::clone(&fail);
        move |key: &u32| {
            assert!(!fail.load(Ordering::SeqCst), "initializer failed");
            *key
        }
    });
    let other = registry.allocate(2);

    fail.store(true, Ordering::SeqCst);
    let payload = catch_unwind(AssertUnwindSafe(|| registry.allocate(1)))
        .expect_err("the initializer's panic reaches the caller");
    assert_eq!(message(&*payload), "initializer failed");

    assert!(!registry.is_allocated(&1));
    assert_eq!(registry.len(), 1);
    assert_eq!(format!("{registry:?}"), "Registry { len: 1, .. }");
    assert_eq!(
        *registry.allocate(2),
        2,
        "existing keys need no initializer"
    );

    fail.store(false, Ordering::SeqCst);
    let lease = registry.allocate(1);
    assert_eq!(*lease, 1, "the registry is usable after the panic");
    drop((lease, other));
    assert!(registry.is_empty());
}

#[test]
fn panicking_predicate_on_release_keeps_the_entry_unleased() {
    let fail = Arc::new(AtomicBool::new(true));
    let inits = AtomicUsize::new(0);
    let registry = Registry::builder(move |_: &u32| inits.fetch_add(1, Ordering::SeqCst))
        .cleanup({
            let fail = Arc::clone(&fail);
            move |_, _| {
                assert!(!fail.load(Ordering::SeqCst), "predicate failed");
                true
            }
        })
        .build();
    let lease = registry.allocate(1);

    let payload = catch_unwind(AssertUnwindSafe(|| drop(lease)))
        .expect_err("the predicate's panic reaches the code dropping the lease");
    assert_eq!(message(&*payload), "predicate failed");

    assert!(registry.is_allocated(&1), "the entry stays");
    assert_eq!(registry.len(), 1);
    assert_eq!(format!("{registry:?}"), "Registry { len: 1, .. }");

    fail.store(false, Ordering::SeqCst);
    let again = registry.get(&1).expect("kept after the panic");
    assert_eq!(*again, 0, "the same value");
    drop(again);
    assert!(
        !registry.is_allocated(&1),
        "the panicking release was counted: one more release frees it"
    );
}

#[test]
fn panicking_predicate_in_sweep_leaves_the_rest_consistent() {
    let fail_on = Arc::new(AtomicUsize::new(usize::MAX));
    let free = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));

    struct Counted(u32, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    let registry = Registry::builder({
        let dropped = Arc::clone(&dropped);
        move |key: &u32| Counted(*key, Arc::clone(&dropped))
    })
    .cleanup({
        let fail_on = Arc::clone(&fail_on);
        let free = Arc::clone(&free);
        move |key, value| {
            assert_eq!(*key, value.0);
            assert!(
                usize::try_from(*key).ok() != Some(fail_on.load(Ordering::SeqCst)),
                "predicate failed"
            );
            free.load(Ordering::SeqCst)
        }
    })
    .build();
    for key in 0..10 {
        drop(registry.allocate(key));
    }
    assert_eq!(registry.len(), 10);

    free.store(true, Ordering::SeqCst);
    fail_on.store(3, Ordering::SeqCst);
    let payload = catch_unwind(AssertUnwindSafe(|| registry.sweep()))
        .expect_err("the predicate's panic reaches the caller of sweep");
    assert_eq!(message(&*payload), "predicate failed");

    assert!(
        registry.is_allocated(&3),
        "the entry whose predicate panicked stays"
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        10 - registry.len(),
        "every entry gone from the map was dropped exactly once"
    );

    fail_on.store(usize::MAX, Ordering::SeqCst);
    let remaining = registry.len();
    assert_eq!(registry.sweep(), remaining);
    assert!(registry.is_empty());
    assert_eq!(dropped.load(Ordering::SeqCst), 10);
}

#[test]
fn panicking_creation_hook_allocates_nothing_and_propagates() {
    let registry = Registry::new(|key: &u32| vec![*key]);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        registry.allocate_with(1, (), |_, _, ()| panic!("creation hook failed"))
    }))
    .expect_err("the hook's panic reaches the caller");
    assert_eq!(message(&*payload), "creation hook failed");
    assert!(!registry.is_allocated(&1), "the half-made value is dropped");

    let (lease, created) = registry.allocate_with(1, 2, |_, value, extra| value.push(extra));
    assert_eq!((created, lease.as_slice()), (Ok(()), &[1, 2][..]));
    let (again, created) = registry.allocate_with(1, 3, |_, value, extra| value.push(extra));
    assert_eq!(created, Err(3), "an allocated key hands the data back");
    assert_eq!(again.as_slice(), &[1, 2], "and its value is left alone");
}
