//! A run publishes its items without allocating per item: a key's retired states are reused
//! (a counting global allocator proves it).
//!
//! The allocator counts every thread, so this binary runs without the libtest harness (`harness =
//! false`): no harness thread allocates while it measures (one did, now and then).

mod common;

use std::alloc::System;

use common::Queue;
use futures::executor::LocalPool;
use futures::stream;
use keyrunner::{Outcome, TaskRunnerRepository};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations made by one run of `items` items on a watched key, driven to its end.
fn allocations_of_a_run(
    repo: &TaskRunnerRepository<u64, u64>,
    queue: &Queue,
    pool: &mut LocalPool,
    items: u64,
) -> usize {
    let region = Region::new(GLOBAL);
    let handle = repo
        .run(1, move |_| stream::iter(0..items))
        .expect("the key is idle: the previous run was driven to its end");
    queue.drive(pool);
    assert_eq!(handle.outcome(), Some(Outcome::Completed));
    drop(handle);
    let change = region.change();
    change.allocations + change.reallocations
}

fn publishing_an_item_allocates_nothing() {
    let queue = Queue::default();
    let repo = TaskRunnerRepository::<u64, u64>::new(queue.spawner());
    let mut pool = LocalPool::new();
    // A listener keeps the key (and its subject) between runs; a late-registered listener
    // would not change the count either.
    let _listening = repo.listen(1, |_| {}, false);
    // Warm-up: the pool's and the queue's buffers grow once.
    allocations_of_a_run(&repo, &queue, &mut pool, 10);

    let short = allocations_of_a_run(&repo, &queue, &mut pool, 10);
    let long = allocations_of_a_run(&repo, &queue, &mut pool, 10_010);
    assert_eq!(
        long,
        short,
        "10,000 more items cost {} more allocations",
        long.abs_diff(short)
    );
    assert!(
        short > 0,
        "the measurement can fail: a run allocates its record"
    );
}

fn main() {
    publishing_an_item_allocates_nothing();
    println!("test publishing_an_item_allocates_nothing ... ok");
}
