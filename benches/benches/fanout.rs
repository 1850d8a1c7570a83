//! Subject fan-out against its peers: `next` to 1 – 1,000 synchronous listeners, and the
//! `Stream` facade waking 1,000 consumer tasks.

#[path = "peers/fanout.rs"]
mod peers;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use keyrunner::subject::Subject;
use tokio::sync::watch;

const LISTENERS: [usize; 4] = [1, 10, 100, 1_000];
const CONSUMERS: usize = 1_000;

/// The body every listener runs, in every peer.
fn listener(value: &u64) {
    black_box(value);
}

fn next(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_next");
    for n in LISTENERS {
        group.throughput(Throughput::Elements(n as u64));

        // Then the same with the retired values' allocations reused: no allocation per value.
        for (name, reuse) in [("keyrunner", false), ("keyrunner_reuse", true)] {
            let subject = Subject::new();
            if reuse {
                subject.reuse_values();
            }
            let subscriptions: Vec<_> = (0..n).map(|_| subject.listen(listener, false)).collect();
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| subject.next(black_box(1_u64)));
            });
            drop(subscriptions);
        }

        let mut floor = peers::VecLoop::new();
        (0..n).for_each(|_| floor.listen(listener));
        group.bench_with_input(BenchmarkId::new("vec_loop", n), &n, |b, _| {
            b.iter(|| floor.next(black_box(1_u64)));
        });

        let mut broadcast = peers::Broadcast::new();
        (0..n).for_each(|_| broadcast.listen(listener));
        group.bench_with_input(BenchmarkId::new("broadcast", n), &n, |b, _| {
            b.iter(|| broadcast.next(black_box(1_u64)));
        });

        let mut watch = peers::Watch::new(0_u64);
        (0..n).for_each(|_| watch.listen(listener));
        group.bench_with_input(BenchmarkId::new("watch", n), &n, |b, _| {
            b.iter(|| watch.next(black_box(1_u64)));
        });

        let slab = peers::MutexSlab::new();
        let subscriptions: Vec<_> = (0..n).map(|_| slab.listen(listener)).collect();
        group.bench_with_input(BenchmarkId::new("mutex_slab", n), &n, |b, _| {
            b.iter(|| slab.next(black_box(1_u64)));
        });
        drop(subscriptions);
    }
    group.finish();
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds because it needs no OS resources beyond memory")
}

/// Yields until `seen` reaches `target`: the woken consumers run meanwhile.
async fn until(seen: &AtomicUsize, target: usize) {
    while seen.load(Ordering::Acquire) < target {
        tokio::task::yield_now().await;
    }
}

/// Time for `iters` values to each reach every consumer; `publish(i)` sends value `i`.
async fn wake_all(seen: &AtomicUsize, iters: u64, publish: impl Fn(u64)) -> Duration {
    let base = seen.load(Ordering::Acquire);
    let start = Instant::now();
    for i in 1..=iters {
        publish(i);
        until(seen, base + CONSUMERS * i as usize).await;
    }
    start.elapsed()
}

fn stream_wakeup(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_wakeup");
    group.throughput(Throughput::Elements(CONSUMERS as u64));

    group.bench_function(BenchmarkId::new("keyrunner", CONSUMERS), |b| {
        let runtime = current_thread();
        let subject = Subject::with_value(0_u64);
        let seen = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            for _ in 0..CONSUMERS {
                let mut stream = subject.stream();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    while let Some(value) = stream.next().await {
                        black_box(value);
                        seen.fetch_add(1, Ordering::AcqRel);
                    }
                });
            }
            // Each consumer first takes the initial value, then parks.
            until(&seen, CONSUMERS).await;
        });
        b.iter_custom(|iters| runtime.block_on(wake_all(&seen, iters, |i| subject.next(i))));
    });

    group.bench_function(BenchmarkId::new("watch", CONSUMERS), |b| {
        let runtime = current_thread();
        let (sender, _) = watch::channel(0_u64);
        let seen = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            for _ in 0..CONSUMERS {
                let mut receiver = sender.subscribe();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    while receiver.changed().await.is_ok() {
                        black_box(*receiver.borrow_and_update());
                        seen.fetch_add(1, Ordering::AcqRel);
                    }
                });
            }
            // As above: every consumer takes one value, then parks.
            sender.send_replace(0);
            until(&seen, CONSUMERS).await;
        });
        b.iter_custom(|iters| {
            runtime.block_on(wake_all(&seen, iters, |i| {
                sender.send_replace(i);
            }))
        });
    });
    group.finish();
}

criterion_group!(benches, next, stream_wakeup);
criterion_main!(benches);
