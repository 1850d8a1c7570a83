//! Model-checked interleavings of allocate, clone, get, release and sweep on one key, and of an
//! initializer racing other callers of its key.
#![cfg(loom)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use keyrunner_resource_registry::{Lease, Registry};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

struct Counters {
    inits: AtomicUsize,
    predicate_calls: AtomicUsize,
    drops: AtomicUsize,
    free: AtomicBool,
    /// The initializer panics while this is set (once: it clears it).
    fail_once: AtomicBool,
}

/// A value numbered by the initializer call that made it, counting its drop.
struct Value {
    number: usize,
    counters: Arc<Counters>,
    /// Set by a creation hook (`allocate_with`); 0 as the initializer makes it.
    tag: AtomicUsize,
}

impl Drop for Value {
    fn drop(&mut self) {
        self.counters.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A registry whose predicate frees when `counters.free` is set.
fn registry(free: bool) -> (Registry<u8, Value>, Arc<Counters>) {
    let counters = Arc::new(Counters {
        inits: AtomicUsize::new(0),
        predicate_calls: AtomicUsize::new(0),
        drops: AtomicUsize::new(0),
        free: AtomicBool::new(free),
        fail_once: AtomicBool::new(false),
    });
    let for_init = Arc::clone(&counters);
    let for_cleanup = Arc::clone(&counters);
    let registry = Registry::builder(move |_: &u8| {
        assert!(
            !for_init.fail_once.swap(false, Ordering::SeqCst),
            "initializer failed"
        );
        Value {
            number: for_init.inits.fetch_add(1, Ordering::SeqCst),
            counters: Arc::clone(&for_init),
            tag: AtomicUsize::new(0),
        }
    })
    .cleanup(move |_, _| {
        for_cleanup.predicate_calls.fetch_add(1, Ordering::SeqCst);
        for_cleanup.free.load(Ordering::SeqCst)
    })
    .build();
    (registry, counters)
}

/// A second lease taken while `held` lives sees the same value: the key was not freed under it.
fn assert_one_value(registry: &Registry<u8, Value>, held: &Lease<u8, Value>) {
    let again = registry.allocate(*held.key());
    assert_eq!(again.number, held.number, "two leases at once, two values");
}

fn allocate_and_release(registry: &Registry<u8, Value>) {
    let lease = registry.allocate(0);
    assert_one_value(registry, &lease);
    drop(lease);
}

/// Two first allocations of one key race: whichever finds the other's node still initializing
/// waits for that initializer and shares its value; every value is made once and freed once.
#[test]
fn an_initializing_entry_racing_allocate_and_release_of_its_key() {
    loom::model(|| {
        let (registry, counters) = registry(true);
        let other = registry.clone();
        let worker = thread::spawn(move || allocate_and_release(&other));
        allocate_and_release(&registry);
        worker.join().expect("worker does not panic");

        assert!(registry.is_empty());
        let inits = counters.inits.load(Ordering::SeqCst);
        assert!((1..=2).contains(&inits));
        assert_eq!(counters.drops.load(Ordering::SeqCst), inits);
        // At least one release to zero per value; at most one per lease.
        let calls = counters.predicate_calls.load(Ordering::SeqCst);
        assert!(
            (inits..=2).contains(&calls),
            "{calls} calls for {inits} values"
        );
    });
}

/// Leases the key with `allocate_with`, tagging the value if this call creates it; asserts what
/// the lease sees: its own tag if it created the value, else the creator's, never an untagged
/// value.
fn allocate_tagged(registry: &Registry<u8, Value>, tag: usize) {
    let (lease, created) = registry.allocate_with(0, tag, |_, value, tag| {
        value.tag.store(tag, Ordering::Relaxed);
    });
    let seen = lease.tag.load(Ordering::Relaxed);
    match created {
        Ok(()) => assert_eq!(seen, tag, "the creator sees its own hook's work"),
        Err(_) => assert_ne!(seen, 0, "a value is published only once its hook ran"),
    }
}

/// Two creations with a hook race on one key: the hook runs before the value is published, so
/// a caller that waits for the other's initializer sees the hook's work (a relaxed store, made
/// visible only by the publication's ordering).
#[test]
fn a_creation_hook_happens_before_the_value_is_shared() {
    loom::model(|| {
        let (registry, counters) = registry(true);
        let other = registry.clone();
        let worker = thread::spawn(move || allocate_tagged(&other, 1));
        allocate_tagged(&registry, 2);
        worker.join().expect("worker does not panic");

        assert!(registry.is_empty());
        let inits = counters.inits.load(Ordering::SeqCst);
        assert_eq!(counters.drops.load(Ordering::SeqCst), inits);
    });
}

/// The initializer panics the first time: the caller that ran it gets the panic, a caller that
/// was waiting for it looks again and makes the value itself. Nothing leaks, nothing hangs.
#[test]
fn a_panicking_initializer_racing_a_waiter() {
    loom::model(|| {
        let (registry, counters) = registry(true);
        counters.fail_once.store(true, Ordering::SeqCst);
        let other = registry.clone();
        let worker = thread::spawn(move || {
            catch_unwind(AssertUnwindSafe(|| allocate_and_release(&other))).is_ok()
        });
        let here = catch_unwind(AssertUnwindSafe(|| allocate_and_release(&registry))).is_ok();
        let there = worker.join().expect("the panic is caught");

        assert!(
            here != there,
            "exactly one caller ran the failing initializer"
        );
        assert!(registry.is_empty());
        assert_eq!(counters.inits.load(Ordering::SeqCst), 1);
        assert_eq!(counters.drops.load(Ordering::SeqCst), 1);
    });
}

/// A release to zero asks its predicate without the lock; a lease taken meanwhile keeps the
/// value, and its own release to zero asks again and frees it.
#[test]
fn racing_clone_and_get_never_see_a_freed_value() {
    loom::model(|| {
        let (registry, counters) = registry(true);
        let other = registry.clone();
        let worker = thread::spawn(move || {
            let lease = other.allocate(0);
            let clone = lease.clone();
            drop(lease);
            assert_one_value(&other, &clone);
        });
        if let Some(lease) = registry.get(&0) {
            assert_one_value(&registry, &lease);
        }
        worker.join().expect("worker does not panic");

        assert!(registry.is_empty());
        assert_eq!(
            counters.inits.load(Ordering::SeqCst),
            1,
            "get never creates"
        );
        assert_eq!(counters.drops.load(Ordering::SeqCst), 1);
        assert!((1..=2).contains(&counters.predicate_calls.load(Ordering::SeqCst)));
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

        // Whatever the interleaving, every value ends up freed exactly once: by a release
        // after the flag flipped, by the sweep, or by this final sweep.
        let last = registry.sweep();
        assert!(registry.is_empty());
        let inits = counters.inits.load(Ordering::SeqCst);
        assert_eq!(counters.drops.load(Ordering::SeqCst), inits);
        assert!(swept + last <= inits);
    });
}

/// `for_each` visits every key allocated before it, waiting for one whose value is still being
/// made: the protocol a shutdown relies on. A starter allocates a key and then, under the value's
/// lock, starts unless a flag is set; a stopper sets the flag and then, under each visited
/// value's lock, stops what started. Whatever the interleaving, nothing runs unstopped.
#[test]
fn for_each_visits_a_key_whose_value_is_being_made() {
    loom::model(|| {
        struct Key {
            running: bool,
            stopped: bool,
        }
        let flag = Arc::new(AtomicBool::new(false));
        let registry = Registry::new(|_: &u8| {
            loom::sync::Mutex::new(Key {
                running: false,
                stopped: false,
            })
        });
        let starter = {
            let (registry, flag) = (registry.clone(), Arc::clone(&flag));
            thread::spawn(move || {
                let lease = registry.allocate(0);
                let mut key = lease.lock().expect("not poisoned");
                if !flag.load(Ordering::SeqCst) {
                    key.running = true;
                }
                drop(key);
                lease
            })
        };
        flag.store(true, Ordering::SeqCst);
        registry.for_each(|_, key| {
            let mut key = key.lock().expect("not poisoned");
            if key.running {
                key.stopped = true;
            }
        });
        let lease = starter.join().expect("the starter does not panic");
        let key = lease.lock().expect("not poisoned");
        assert!(!key.running || key.stopped, "a start escaped the stop");
    });
}
