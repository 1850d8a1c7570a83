//! With `reuse_values`, a steady stream of values allocates nothing (a counting global
//! allocator proves it); without, every value costs one allocation.
//!
//! The allocator counts every thread, so this binary holds this one test only.

use std::alloc::System;
use std::hint::black_box;

use keyrunner_subject::Subject;
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

#[test]
fn reused_values_allocate_nothing_in_the_steady_state() {
    let plain = Subject::new();
    let reusing = Subject::new();
    reusing.reuse_values();
    let _a = plain.listen(
        |value: &u64| {
            black_box(*value);
        },
        false,
    );
    let _b = reusing.listen(
        |value: &u64| {
            black_box(*value);
        },
        false,
    );
    // Warm up: the first values fill `last`, `current` and the spare.
    for value in 0..3 {
        plain.next(value);
        reusing.next(value);
    }
    assert_eq!(
        allocations_during(|| (0..1_000).for_each(|v| plain.next(v))),
        1_000
    );
    assert_eq!(
        allocations_during(|| (0..1_000).for_each(|v| reusing.next(v))),
        0
    );
    // `update` too.
    assert_eq!(
        allocations_during(|| {
            (0..1_000).for_each(|_| {
                reusing.update(|last| last.map(|last| last + 1));
            });
        }),
        0
    );
    // Holding a value makes its allocation unavailable; values stay correct and the subject
    // falls back to allocating.
    let held = reusing.last().expect("a value was recorded");
    assert!(allocations_during(|| (0..10).for_each(|v| reusing.next(v))) > 0);
    assert_eq!(*held, 1_999);
    assert_eq!(reusing.last().as_deref(), Some(&9));
}
