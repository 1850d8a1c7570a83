//! With `reuse_values`, a steady stream of values allocates nothing (a counting global
//! allocator proves it); without, every value costs one allocation.
//!
//! The allocator counts every thread, so this binary runs without the libtest harness (`harness =
//! false`): no harness thread allocates while it measures (one did, now and then).

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

fn values_allocate_nothing_in_the_steady_state() {
    let subject = Subject::new();
    let _listening = subject.listen(
        |value: &u64| {
            black_box(*value);
        },
        false,
    );
    // Warm up: the first value allocates the one allocation every later value reuses.
    subject.next(0);
    assert_eq!(
        allocations_during(|| (0..1_000).for_each(|v| subject.next(v))),
        0
    );
    // `update` too.
    assert_eq!(
        allocations_during(|| {
            (0..1_000).for_each(|_| {
                subject.update(|last| last.map(|last| last + 1));
            });
        }),
        0
    );
    // A value someone holds keeps its allocation: values stay correct and the subject
    // allocates once for the next value, then reuses that one.
    let held = subject.last().expect("a value was recorded");
    assert_eq!(
        allocations_during(|| (0..10).for_each(|v| subject.next(v))),
        1
    );
    assert_eq!(*held, 1_999);
    assert_eq!(subject.last().as_deref(), Some(&9));
    // A shared initial value is never written into.
    let initial = std::sync::Arc::new(5_u64);
    let shared = Subject::with_shared_value(std::sync::Arc::clone(&initial));
    assert_eq!(allocations_during(|| shared.next(6)), 1);
    assert_eq!(*initial, 5);
    assert_eq!(allocations_during(|| shared.next(7)), 0);
}

fn main() {
    values_allocate_nothing_in_the_steady_state();
    println!("test values_allocate_nothing_in_the_steady_state ... ok");
}
