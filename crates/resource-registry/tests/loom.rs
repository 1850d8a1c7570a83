//! Model-checked interleavings of allocate, clone, get, release and sweep on one key.
#![cfg(loom)]

use keyrunner_resource_registry::Registry;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

struct Counters {
    inits: AtomicUsize,
    predicate_calls: AtomicUsize,
    frees: AtomicUsize,
    free: AtomicBool,
}

/// A value that knows whether the predicate decided to free it.
struct Value {
    removed: AtomicBool,
}

impl Value {
    fn assert_live(&self) {
        assert!(
            !self.removed.load(Ordering::SeqCst),
            "a lease holds a value that was freed"
        );
    }
}

/// A registry whose predicate frees when `counters.free` is set, marking freed values.
fn registry(free: bool) -> (Registry<u8, Value>, Arc<Counters>) {
    let counters = Arc::new(Counters {
        inits: AtomicUsize::new(0),
        predicate_calls: AtomicUsize::new(0),
        frees: AtomicUsize::new(0),
        free: AtomicBool::new(free),
    });
    let for_init = Arc::clone(&counters);
    let for_cleanup = Arc::clone(&counters);
    let registry = Registry::builder(move |_: &u8| {
        for_init.inits.fetch_add(1, Ordering::SeqCst);
        Value {
            removed: AtomicBool::new(false),
        }
    })
    .cleanup(move |_, value| {
        for_cleanup.predicate_calls.fetch_add(1, Ordering::SeqCst);
        let free = for_cleanup.free.load(Ordering::SeqCst);
        if free {
            assert!(
                !value.removed.swap(true, Ordering::SeqCst),
                "an entry was freed twice"
            );
            for_cleanup.frees.fetch_add(1, Ordering::SeqCst);
        }
        free
    })
    .build();
    (registry, counters)
}

fn allocate_and_release(registry: &Registry<u8, Value>) {
    let lease = registry.allocate(0);
    lease.assert_live();
    drop(lease);
}

#[test]
fn racing_allocate_and_release_free_each_value_once() {
    loom::model(|| {
        let (registry, counters) = registry(true);
        let other = registry.clone();
        let worker = thread::spawn(move || allocate_and_release(&other));
        allocate_and_release(&registry);
        worker.join().expect("worker does not panic");

        assert!(registry.is_empty());
        let inits = counters.inits.load(Ordering::SeqCst);
        assert!((1..=2).contains(&inits));
        assert_eq!(counters.frees.load(Ordering::SeqCst), inits);
        assert_eq!(
            counters.predicate_calls.load(Ordering::SeqCst),
            inits,
            "the predicate runs once per release to zero"
        );
    });
}

#[test]
fn racing_clone_and_get_never_see_a_freed_value() {
    loom::model(|| {
        let (registry, counters) = registry(true);
        let other = registry.clone();
        let worker = thread::spawn(move || {
            let lease = other.allocate(0);
            let clone = lease.clone();
            drop(lease);
            clone.assert_live();
        });
        if let Some(lease) = registry.get(&0) {
            lease.assert_live();
        }
        worker.join().expect("worker does not panic");

        assert!(registry.is_empty());
        assert_eq!(
            counters.inits.load(Ordering::SeqCst),
            1,
            "get never creates"
        );
        assert_eq!(counters.frees.load(Ordering::SeqCst), 1);
        assert_eq!(counters.predicate_calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn racing_sweep_frees_only_unleased_entries() {
    loom::model(|| {
        let (registry, counters) = registry(false);
        let other = registry.clone();
        let releaser = thread::spawn(move || allocate_and_release(&other));
        let sweeper = {
            let registry = registry.clone();
            let counters = Arc::clone(&counters);
            thread::spawn(move || {
                counters.free.store(true, Ordering::SeqCst);
                registry.sweep()
            })
        };
        allocate_and_release(&registry);
        releaser.join().expect("releaser does not panic");
        let swept = sweeper.join().expect("sweeper does not panic");

        // Whatever the interleaving, every entry ends up freed exactly once: by a release
        // after the flag flipped, by the sweep, or by this final sweep.
        let last = registry.sweep();
        assert!(registry.is_empty());
        let inits = counters.inits.load(Ordering::SeqCst);
        assert_eq!(counters.frees.load(Ordering::SeqCst), inits);
        assert!(swept + last <= inits);
    });
}
