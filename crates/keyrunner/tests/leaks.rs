//! Leak check: churning many keys through a `PubSub` and a repository returns the live
//! allocation count and the live bytes to their baseline (a counting global allocator).
//!
//! The allocator counts every thread, so this binary holds this one test only.
//!
//! Size: `KEYRUNNER_LEAK_KEYS` keys (default 100,000); `cargo xtask leaks` churns 1,000,000 in
//! release.

use std::alloc::System;
use std::sync::{Arc, Mutex, PoisonError};

use futures::executor::LocalPool;
use futures::stream;
use futures::task::LocalSpawnExt;
use keyrunner::pub_sub::PubSub;
use keyrunner::{BoxFuture, Outcome, TaskRunnerRepository};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Queue = Arc<Mutex<Vec<BoxFuture>>>;

fn keys() -> u64 {
    std::env::var("KEYRUNNER_LEAK_KEYS")
        .ok()
        .and_then(|keys| keys.parse().ok())
        .unwrap_or(100_000)
}

/// Hands every queued driver to `pool` and runs it until nothing can make progress.
fn drive(queue: &Queue, pool: &mut LocalPool) {
    loop {
        let queued = std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner));
        if queued.is_empty() {
            break;
        }
        for future in queued {
            pool.spawner()
                .spawn_local(future)
                .expect("a local pool accepts tasks while it exists");
        }
        pool.run_until_stalled();
    }
}

/// One key through both layers: listen / next / unsubscribe on the `PubSub`, and listen / run /
/// complete / unsubscribe on the repository.
fn churn(
    pubsub: &PubSub<u64, String>,
    repo: &TaskRunnerRepository<u64, u64>,
    queue: &Queue,
    pool: &mut LocalPool,
    key: u64,
) {
    let subscription = pubsub.listen(key, |value: &String| assert!(!value.is_empty()), true);
    pubsub.next(key, format!("value {key}"));
    subscription.unsubscribe();

    let listener = repo.listen(key, |_| {}, key.is_multiple_of(2));
    let handle = repo
        .run(key, move |_| stream::iter([key, key.wrapping_add(1)]))
        .expect("every key is fresh");
    drive(queue, pool);
    assert_eq!(handle.outcome(), Some(Outcome::Completed));
    drop(handle);
    listener.unsubscribe();
}

/// Live allocations and live bytes since `region` began.
fn net(region: &Region<'_, System>) -> (i128, i128) {
    let change = region.change();
    let count = change.allocations as i128 - change.deallocations as i128;
    let bytes = change.bytes_allocated as i128 - change.bytes_deallocated as i128
        + change.bytes_reallocated as i128;
    (count, bytes)
}

#[test]
fn churning_keys_returns_memory_to_its_baseline() {
    let queue: Queue = Arc::default();
    let sink = Arc::clone(&queue);
    let repo: TaskRunnerRepository<u64, u64> =
        TaskRunnerRepository::new(move |future: BoxFuture| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(future);
        });
    let pubsub: PubSub<u64, String> = PubSub::new();
    let mut pool = LocalPool::new();

    // Warm up: first uses that allocate once per process or per pool, not per key.
    for key in 0..16 {
        churn(&pubsub, &repo, &queue, &mut pool, u64::MAX - key);
    }
    pubsub.shrink_to_fit();
    repo.shrink_to_fit();

    let region = Region::new(GLOBAL);
    let keys = keys();
    for key in 0..keys {
        churn(&pubsub, &repo, &queue, &mut pool, key);
    }
    assert!(
        pubsub.is_empty() && repo.is_empty(),
        "every key was forgotten"
    );
    let before_shrink = net(&region);
    pubsub.shrink_to_fit();
    repo.shrink_to_fit();
    let (count, bytes) = net(&region);

    assert!(
        before_shrink.1 > 0,
        "the churn grew the maps, so the measurement can see memory ({before_shrink:?})"
    );
    assert_eq!(
        (count, bytes),
        (0, 0),
        "live allocations and bytes after churning {keys} keys (before shrinking: {before_shrink:?})"
    );
}
