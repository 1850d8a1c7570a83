//! Real multi-threaded races: counting and cleanup cannot be split by an allocation, so two
//! leases held at the same time on one key always share one value.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use keyrunner_resource_registry::{Lease, Registry};

const THREADS: usize = 8;
const ITERATIONS: usize = 4_000;
const KEYS: usize = 3;

#[derive(Default)]
struct Counters {
    inits: AtomicUsize,
    predicate_calls: AtomicUsize,
    drops: AtomicUsize,
}

/// A value that counts its drop.
struct Value {
    counters: Arc<Counters>,
}

impl Drop for Value {
    fn drop(&mut self) {
        self.counters.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Leases `key` a second time and checks that both leases share one value: a key freed while
/// `held` leased it would have a second value now.
fn assert_one_value(registry: &Registry<usize, Value>, held: &Lease<usize, Value>) {
    let again = registry.allocate(*held.key());
    assert!(
        std::ptr::eq(&**held, &*again),
        "two leases held at once on one key see two values"
    );
}

/// A registry whose predicate frees when `decide(call_number)` says so.
fn registry(
    counters: &Arc<Counters>,
    decide: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> Registry<usize, Value> {
    let for_init = Arc::clone(counters);
    let for_cleanup = Arc::clone(counters);
    Registry::builder(move |_: &usize| {
        for_init.inits.fetch_add(1, Ordering::SeqCst);
        Value {
            counters: Arc::clone(&for_init),
        }
    })
    .cleanup(move |_, _| decide(for_cleanup.predicate_calls.fetch_add(1, Ordering::SeqCst)))
    .build()
}

/// Each thread allocates, clones, looks up and drops leases on a few shared keys.
fn churn(registry: &Registry<usize, Value>, sweeper: bool) {
    let barrier = Barrier::new(THREADS + usize::from(sweeper));
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..ITERATIONS {
                        let key = (thread + i) % KEYS;
                        let lease = registry.allocate(key);
                        assert_one_value(registry, &lease);
                        if i % 3 == 0 {
                            let clone = lease.clone();
                            drop(lease);
                            assert_one_value(registry, &clone);
                        } else if let Some(other) = registry.get(&((key + 1) % KEYS)) {
                            assert_one_value(registry, &other);
                            assert_one_value(registry, &lease);
                        }
                    }
                })
            })
            .collect();
        if sweeper {
            scope.spawn(|| {
                barrier.wait();
                while !done.load(Ordering::SeqCst) {
                    registry.sweep();
                }
            });
        }
        for worker in workers {
            if let Err(panic) = worker.join() {
                done.store(true, Ordering::SeqCst);
                std::panic::resume_unwind(panic);
            }
        }
        done.store(true, Ordering::SeqCst);
    });
}

#[test]
fn racing_allocations_never_receive_a_freed_value() {
    let counters = Arc::new(Counters::default());
    let registry = registry(&counters, |_| true);

    churn(&registry, false);

    assert!(
        registry.is_empty(),
        "every key was freed by its last release"
    );
    let inits = counters.inits.load(Ordering::SeqCst);
    assert!(inits >= KEYS);
    assert_eq!(
        counters.drops.load(Ordering::SeqCst),
        inits,
        "each value freed once"
    );
    // Every value was freed by a release to zero; a release to zero whose answer came too late
    // (the key was leased again while the predicate ran) asked too, and freed nothing.
    assert!(counters.predicate_calls.load(Ordering::SeqCst) >= inits);
}

#[test]
fn racing_allocations_with_a_keeping_predicate_and_a_sweeper_stay_consistent() {
    let counters = Arc::new(Counters::default());
    let free_all = Arc::new(AtomicBool::new(false));
    let registry = registry(&counters, {
        let free_all = Arc::clone(&free_all);
        move |call| free_all.load(Ordering::SeqCst) || call % 3 == 0
    });

    churn(&registry, true);

    let inits = counters.inits.load(Ordering::SeqCst);
    assert!(inits > KEYS, "the race freed and re-created keys");
    assert_eq!(
        counters.drops.load(Ordering::SeqCst) + registry.len(),
        inits,
        "every value is either still allocated or was dropped, once"
    );
    free_all.store(true, Ordering::SeqCst);
    let kept = registry.len();
    assert_eq!(registry.sweep(), kept, "kept entries are unleased");
    assert!(registry.is_empty());
    assert_eq!(counters.drops.load(Ordering::SeqCst), inits);
}

#[test]
fn racing_first_allocations_initialize_each_key_once() {
    let counters = Arc::new(Counters::default());
    let registry = registry(&counters, |_| true);
    let barrier = Barrier::new(THREADS);
    let leases: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    registry.allocate(0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    assert_eq!(counters.inits.load(Ordering::SeqCst), 1);
    assert!(
        leases
            .iter()
            .all(|lease| std::ptr::eq(&**lease, &*leases[0]))
    );
    drop(leases);
    assert!(registry.is_empty());
    assert_eq!(counters.drops.load(Ordering::SeqCst), 1);
}
