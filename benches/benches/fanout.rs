//! Subject fan-out against its peers: `next` to 1 – 1,000 synchronous listeners, and the
//! `Stream` facade waking 1,000 consumer tasks.
//!
//! With `KEYRUNNER_BENCH_LOOP="<benchmark id> <iterations>"` set, the binary skips criterion
//! and runs that one measurement's body the given number of times: a driver loop for
//! `valgrind --tool=callgrind`, whose instruction counts are exact where wall-clock times on a
//! shared machine are not (see `docs/benchmarks.md`).

#[path = "peers/fanout.rs"]
mod peers;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
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

        let subject = Subject::new();
        let subscriptions: Vec<_> = (0..n).map(|_| subject.listen(listener, false)).collect();
        group.bench_with_input(BenchmarkId::new("keyrunner", n), &n, |b, _| {
            b.iter(|| subject.next(black_box(1_u64)));
        });
        drop(subscriptions);

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

/// The body of one measurement, run `iterations` times, for an instruction count.
fn instruction_loop(id: &str, iterations: u64) {
    let (name, listeners) = id
        .strip_prefix("fanout_next/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(name, n)| Some((name, n.parse::<usize>().ok()?)))
        .unwrap_or(("", 0));
    match (name, id) {
        ("keyrunner", _) => {
            let subject = Subject::new();
            let _subscriptions: Vec<_> = (0..listeners)
                .map(|_| subject.listen(listener, false))
                .collect();
            (0..iterations).for_each(|_| subject.next(black_box(1_u64)));
        }
        ("vec_loop", _) => {
            let mut floor = peers::VecLoop::new();
            (0..listeners).for_each(|_| floor.listen(listener));
            (0..iterations).for_each(|_| floor.next(black_box(1_u64)));
        }
        ("broadcast", _) => {
            let mut broadcast = peers::Broadcast::new();
            (0..listeners).for_each(|_| broadcast.listen(listener));
            (0..iterations).for_each(|_| broadcast.next(black_box(1_u64)));
        }
        ("watch", _) => {
            let mut watch = peers::Watch::new(0_u64);
            (0..listeners).for_each(|_| watch.listen(listener));
            (0..iterations).for_each(|_| watch.next(black_box(1_u64)));
        }
        (_, "stream_wakeup/keyrunner/1000") => {
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
                until(&seen, CONSUMERS).await;
                wake_all(&seen, iterations, |i| subject.next(i)).await;
            });
        }
        (_, "stream_wakeup/watch/1000") => {
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
                sender.send_replace(0);
                until(&seen, CONSUMERS).await;
                wake_all(&seen, iterations, |i| {
                    sender.send_replace(i);
                })
                .await;
            });
        }
        _ => panic!("no instruction loop for {id:?}"),
    }
}

criterion_group!(benches, next, stream_wakeup);

fn main() {
    keyrunner_benches::criterion_or_loop(instruction_loop, || {
        benches();
        Criterion::default().configure_from_args().final_summary();
    });
}
