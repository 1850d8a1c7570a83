//! Leak check: churning many keys through a `PubSub` and a repository returns the live
//! allocation count and the live bytes to their baseline (a counting global allocator).
//!
//! The allocator counts every thread, so this binary runs without the libtest harness (`harness =
//! false`): no harness thread allocates while it measures (one did, now and then).
//!
//! Size: `KEYRUNNER_LEAK_KEYS` keys (default 100,000); `cargo xtask leaks` churns 1,000,000 in
//! release.

mod common;

use std::alloc::System;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::Queue;
use futures::executor::LocalPool;
use futures::stream;
use keyrunner::pub_sub::PubSub;
use keyrunner::{Clock, Delta, Outcome, TaskRunnerRepository};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn keys() -> u64 {
    std::env::var("KEYRUNNER_LEAK_KEYS")
        .ok()
        .and_then(|keys| keys.parse().ok())
        .unwrap_or(100_000)
}

/// One key through both layers: listen / next / unsubscribe on the `PubSub`; listen / run /
/// complete / unsubscribe on a repository of snapshots; and a streamed, delta-folding run on a
/// repository of replies.
fn churn(
    pubsub: &PubSub<u64, String>,
    repo: &TaskRunnerRepository<u64, u64>,
    replies: &TaskRunnerRepository<u64, String>,
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
    queue.drive(pool);
    assert_eq!(handle.outcome(), Some(Outcome::Completed));
    drop(handle);
    listener.unsubscribe();

    let mut events = replies.stream(key);
    let handle = replies
        .run(key, move |_| {
            stream::iter(["Hel", "lo"].map(|token| Delta(format!("{token}{key}"))))
        })
        .expect("every key is fresh");
    queue.drive(pool);
    assert_eq!(handle.outcome(), Some(Outcome::Completed));
    drop(handle);
    let seen = futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(
        futures::StreamExt::take(&mut events, 4),
    ));
    assert_eq!(seen.len(), 4, "start, two deltas, end");
    drop(events);
}

/// Live allocations and live bytes since `region` began.
fn net(region: &Region<'_, System>) -> (i128, i128) {
    let change = region.change();
    let count = change.allocations as i128 - change.deallocations as i128;
    // A reallocation's growth or shrinkage is already counted in these two totals
    // (`bytes_reallocated` is the same change again, so it is not added).
    let bytes = change.bytes_allocated as i128 - change.bytes_deallocated as i128;
    (count, bytes)
}

fn churning_keys_returns_memory_to_its_baseline() {
    let queue = Queue::default();
    let repo: TaskRunnerRepository<u64, u64> = TaskRunnerRepository::new(queue.spawner());
    let replies: TaskRunnerRepository<u64, String> = TaskRunnerRepository::new(queue.spawner());
    let pubsub: PubSub<u64, String> = PubSub::new();
    let mut pool = LocalPool::new();

    // Warm up: first uses that allocate once per process or per pool, not per key.
    for key in 0..16 {
        churn(&pubsub, &repo, &replies, &queue, &mut pool, u64::MAX - key);
    }
    pubsub.shrink_to_fit();
    repo.shrink_to_fit();
    replies.shrink_to_fit();

    let region = Region::new(GLOBAL);
    let keys = keys();
    for key in 0..keys {
        churn(&pubsub, &repo, &replies, &queue, &mut pool, key);
    }
    assert!(
        pubsub.is_empty() && repo.is_empty() && replies.is_empty(),
        "every key was forgotten"
    );
    let before_shrink = net(&region);
    pubsub.shrink_to_fit();
    repo.shrink_to_fit();
    replies.shrink_to_fit();
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

/// A clock the test moves by hand.
#[derive(Debug)]
struct TestClock(Mutex<Instant>);

impl TestClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Many keys retained at once (their runs ended within the retention time), many streams open at
/// once and many tasks awaiting the shutdown signal at once: once the keys have expired and the
/// streams and waits are dropped, `shrink_to_fit` returns the memory they took, as it does the
/// key table's, however many there were at the peak.
fn many_streams_waits_and_retained_keys_at_once_leave_nothing_after_shrink_to_fit() {
    const AT_ONCE: u64 = 10_000;
    let queue = Queue::default();
    let clock = Arc::new(TestClock(Mutex::new(Instant::now())));
    let repo: TaskRunnerRepository<u64, u64> = TaskRunnerRepository::builder(queue.spawner())
        .retain_for(Duration::from_secs(60))
        .clock(Arc::clone(&clock))
        .build();
    let mut pool = LocalPool::new();
    let peak = |repo: &TaskRunnerRepository<u64, u64>, pool: &mut LocalPool, keys: u64| {
        let streams: Vec<_> = (0..keys).map(|key| repo.stream(key)).collect();
        let mut waiting: Vec<_> = (0..keys)
            .map(|_| repo.shutdown_signal().aborted())
            .collect();
        for wait in &mut waiting {
            assert!(futures::FutureExt::now_or_never(wait).is_none());
        }
        drop(waiting);
        for key in 0..keys {
            repo.run(key, move |_| stream::iter([key]))
                .expect("every key is idle")
                .detach();
            queue.drive(pool);
        }
        drop(streams);
        assert_eq!(repo.len(), usize::try_from(keys).unwrap_or(usize::MAX));
        clock.advance(Duration::from_secs(61));
        assert!(repo.is_empty(), "every retained key expired");
    };

    // Warm up: first uses that allocate once per process or per pool, not per key.
    peak(&repo, &mut pool, 16);
    repo.shrink_to_fit();

    let region = Region::new(GLOBAL);
    peak(&repo, &mut pool, AT_ONCE);
    let before_shrink = net(&region);
    repo.shrink_to_fit();
    assert_eq!(
        net(&region),
        (0, 0),
        "live allocations and bytes after {AT_ONCE} streams, waits and retained keys at once (before \
         shrinking: {before_shrink:?})"
    );
}

fn main() {
    churning_keys_returns_memory_to_its_baseline();
    println!("test churning_keys_returns_memory_to_its_baseline ... ok");
    many_streams_waits_and_retained_keys_at_once_leave_nothing_after_shrink_to_fit();
    println!(
        "test many_streams_waits_and_retained_keys_at_once_leave_nothing_after_shrink_to_fit ... ok"
    );
}
