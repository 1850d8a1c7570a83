//! `next` to a key nobody holds allocates nothing, a shared initial value is never copied per
//! key, and reused values cost no allocation per value (a counting global allocator proves it).
//!
//! The allocator counts every thread, so this binary runs without the libtest harness (`harness =
//! false`): no harness thread allocates while it measures (one did, now and then).

use std::alloc::System;

use keyrunner_pub_sub::PubSub;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (and reallocations) made while `f` runs.
fn allocations_during(f: impl FnOnce()) -> usize {
    let region = Region::new(GLOBAL);
    f();
    let change = region.change();
    change.allocations + change.reallocations
}

fn next_to_an_unwatched_key_allocates_nothing() {
    // Without a predicate.
    let plain: PubSub<u64, String> = PubSub::new();
    let value = "a value that owns a heap buffer".to_owned();
    assert_eq!(allocations_during(|| plain.next(1, value)), 0);
    assert!(plain.is_empty());

    // With a predicate that would clean the value up.
    let picky = PubSub::<u64, String>::builder()
        .should_cleanup(|_, last| !last.starts_with("keep"))
        .build();
    let value = "drop me".to_owned();
    assert_eq!(allocations_during(|| picky.next(1, value)), 0);
    assert!(picky.is_empty());

    // Also after the registry has held and freed keys.
    drop(picky.listen(2, |_| {}, false));
    let value = "drop me too".to_owned();
    assert_eq!(allocations_during(|| picky.next(2, value)), 0);
    assert!(picky.is_empty());

    // The measurement can fail: a value worth keeping is allocated.
    let value = "keep me".to_owned();
    assert!(allocations_during(|| picky.next(3, value)) > 0);
    assert!(picky.is_allocated(&3));

    // A shared initial value: reading a key that is not allocated allocates nothing, and
    // allocating a key costs exactly one allocation less than with the same value per key.
    let shared = PubSub::<u64, u64>::builder()
        .shared_initial_value(7)
        .build();
    let per_key = PubSub::<u64, u64>::builder()
        .initial_value(|_| Some(7))
        .build();
    // Let both registries grow their tables first.
    drop((shared.subject(0), per_key.subject(0)));
    assert_eq!(
        allocations_during(|| assert_eq!(*shared.last(&1).expect("an initial value"), 7)),
        0
    );
    assert_eq!(
        allocations_during(|| assert_eq!(*per_key.last(&1).expect("an initial value"), 7)),
        1
    );
    let with_shared = allocations_during(|| drop(shared.listen(1, |_| {}, true)));
    let with_copies = allocations_during(|| drop(per_key.listen(1, |_| {}, true)));
    assert_eq!(with_shared + 1, with_copies);

    // Reused values: a held topic that keeps receiving values allocates nothing per value.
    let reusing = PubSub::<u64, u64>::builder().reuse_values().build();
    let topic = reusing.subject(1);
    let _listening = topic.listen(|_| {}, false);
    (0..3).for_each(|value| topic.next(value));
    assert_eq!(
        allocations_during(|| (0..1_000).for_each(|v| topic.next(v))),
        0
    );
    assert_eq!(topic.last().as_deref(), Some(&999));
}

fn main() {
    next_to_an_unwatched_key_allocates_nothing();
    println!("test next_to_an_unwatched_key_allocates_nothing ... ok");
}
