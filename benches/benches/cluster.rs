//! keyrunner-redis against the hand-rolled Redis runner (`SET NX PX` + `PUBLISH` +
//! compare-and-delete, `peers/redis.rs`) and against raw pipelined `PUBLISH` of the same
//! payloads, on the same private Redis, in one run:
//!
//! - `cluster_cycle`: run → first item → idle, one key;
//! - `cluster_progress_per_key`: 4,096 items of one run, as fast as the task yields them;
//! - `cluster_progress_1000_keys`: 1,000 runs of 100 items each, at once;
//! - `cluster_progress_per_key_fsync`: the per-key figure on a Redis with `appendfsync always`;
//! - `cluster_stop_abort`: a stop on one replica → the owner's abort signal on another.
//!
//! After the criterion groups, a summary pass prints the stop → abort p50/p99, the Redis bytes
//! per idle and per running key (`MEMORY USAGE`), and the ratios, all from this same run.
//! Each replica is a `ClusterRepository` with its own connections, on one tokio runtime.

#[path = "peers/redis.rs"]
mod peers;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::stream;
use keyrunner_redis::ClusterRepository;
use keyrunner_redis::testing::{Persistence, RedisServer};
use peers::HandRolledRedis;

type Repo = ClusterRepository<String, String, String>;

const TTL: Duration = Duration::from_secs(10);
const ITEMS: usize = 4096;
const KEYS: usize = 1000;
const ITEMS_PER_KEY: usize = 100;

/// One progress item: 32 bytes of text, like a few tokens of a reply.
fn payload(i: usize) -> String {
    format!("tokens {i:08} of the reply.......")
}

fn payloads(n: usize) -> Vec<String> {
    (0..n).map(payload).collect()
}

/// A fresh key per measurement, so nothing waits for a previous run's end.
fn fresh(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A private Redis with two keyrunner-redis replicas, two hand-rolled ones, and a raw connection.
struct Setup {
    runtime: tokio::runtime::Runtime,
    server: RedisServer,
    owner: Repo,
    stopper: Repo,
    peer_owner: HandRolledRedis,
    peer_stopper: HandRolledRedis,
    raw: redis::aio::MultiplexedConnection,
}

impl Setup {
    fn new(persistence: Persistence) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // On disk: the `appendfsync always` figures are about what an fsync costs.
        let server = RedisServer::start_on_disk(persistence);
        let url = server.url();
        let (owner, stopper, peer_owner, peer_stopper, raw) = runtime.block_on(async {
            let replica = || async {
                Repo::builder(url.as_str())
                    .namespace("bench")
                    .lease_ttl(TTL)
                    .connect()
                    .await
                    .expect("connect a replica")
            };
            let raw = redis::Client::open(url.as_str())
                .expect("a valid URL")
                .get_multiplexed_async_connection()
                .await
                .expect("connect");
            (
                replica().await,
                replica().await,
                HandRolledRedis::connect(&url, "peer-a", TTL).await,
                HandRolledRedis::connect(&url, "peer-b", TTL).await,
                raw,
            )
        });
        Self {
            runtime,
            server,
            owner,
            stopper,
            peer_owner,
            peer_stopper,
            raw,
        }
    }

    /// keyrunner-redis: one run of `items`, until its handle resolves (every item written).
    async fn keyrunner_run(&self, key: String, items: Vec<String>) {
        let handle = self
            .owner
            .run(key, move |_cx| stream::iter(items))
            .await
            .expect("a fresh key is idle");
        black_box(handle.await);
    }

    async fn peer_run(&self, key: &str, items: Vec<String>) {
        let (handle, _) = self
            .peer_owner
            .run(key, stream::iter(items))
            .await
            .expect("a fresh key is free");
        black_box(handle.await.expect("the run's task"));
    }

    /// Raw `PUBLISH` of `items`, pipelined on one connection: the ceiling.
    async fn publish_pipelined(&self, channels: &[String], items: &[String]) {
        let mut pipeline = redis::pipe();
        for (i, item) in items.iter().enumerate() {
            pipeline
                .publish(&channels[i % channels.len()], item)
                .ignore();
        }
        let mut raw = self.raw.clone();
        let () = pipeline.query_async(&mut raw).await.expect("PUBLISH");
    }

    /// A run on `owner` that never ends by itself; returns once `stopper` stopped it and the
    /// owner's signal fired, with the time in between.
    async fn keyrunner_stop_abort(&self) -> Duration {
        let key = fresh("stop");
        let handle = self
            .owner
            .run(key.clone(), |_cx| stream::pending::<String>())
            .await
            .expect("a fresh key is idle");
        let signal = handle.abort_signal().expect("a local run");
        let started = Instant::now();
        self.stopper.stop(&key, None).await.expect("it runs");
        signal.aborted().await;
        let took = started.elapsed();
        handle.await;
        took
    }

    async fn peer_stop_abort(&self) -> Duration {
        let key = fresh("stop");
        let (handle, signal) = self
            .peer_owner
            .run(&key, stream::pending::<String>())
            .await
            .expect("a fresh key is free");
        let started = Instant::now();
        assert!(self.peer_stopper.stop(&key).await);
        signal.cancelled().await;
        let took = started.elapsed();
        black_box(handle.await.expect("the run's task"));
        took
    }
}

fn timed<F: Future<Output = ()>>(
    runtime: &tokio::runtime::Runtime,
    iters: u64,
    mut one: impl FnMut() -> F,
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            one().await;
        }
        started.elapsed()
    })
}

fn cycle(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("cluster_cycle");
    group.throughput(Throughput::Elements(1));
    group.bench_function("keyrunner", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || {
                setup.keyrunner_run(fresh("cycle"), payloads(1))
            })
        });
    });
    group.bench_function("hand_rolled", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || async {
                setup.peer_run(&fresh("cycle"), payloads(1)).await;
            })
        });
    });
    group.finish();
}

fn progress(c: &mut Criterion, name: &str, setup: &Setup) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.sample_size(10);
    group.bench_function("keyrunner", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || {
                setup.keyrunner_run(fresh("progress"), payloads(ITEMS))
            })
        });
    });
    group.bench_function("hand_rolled", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || async {
                setup.peer_run(&fresh("progress"), payloads(ITEMS)).await;
            })
        });
    });
    let items = payloads(ITEMS);
    group.bench_function("publish_pipelined", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || async {
                setup.publish_pipelined(&[fresh("channel")], &items).await;
            })
        });
    });
    group.finish();
}

fn progress_many(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("cluster_progress_1000_keys");
    group.throughput(Throughput::Elements((KEYS * ITEMS_PER_KEY) as u64));
    group.sample_size(10);
    group.bench_function("keyrunner", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || async {
                let runs =
                    (0..KEYS).map(|_| setup.keyrunner_run(fresh("many"), payloads(ITEMS_PER_KEY)));
                futures::future::join_all(runs).await;
            })
        });
    });
    group.bench_function("hand_rolled", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || async {
                let runs = (0..KEYS).map(|_| async {
                    setup
                        .peer_run(&fresh("many"), payloads(ITEMS_PER_KEY))
                        .await
                });
                futures::future::join_all(runs).await;
            })
        });
    });
    let items = payloads(KEYS * ITEMS_PER_KEY);
    let channels: Vec<String> = (0..KEYS).map(|_| fresh("channel")).collect();
    group.bench_function("publish_pipelined", |b| {
        b.iter_custom(|iters| {
            timed(&setup.runtime, iters, || {
                setup.publish_pipelined(&channels, &items)
            })
        });
    });
    group.finish();
}

fn stop_abort(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("cluster_stop_abort");
    group.bench_function("keyrunner", |b| {
        b.iter_custom(|iters| {
            setup.runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += setup.keyrunner_stop_abort().await;
                }
                total
            })
        });
    });
    group.bench_function("hand_rolled", |b| {
        b.iter_custom(|iters| {
            setup.runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += setup.peer_stop_abort().await;
                }
                total
            })
        });
    });
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of `samples` runs of `one`, in items per second.
fn items_per_second<F: Future<Output = ()>>(
    runtime: &tokio::runtime::Runtime,
    items: usize,
    samples: usize,
    mut one: impl FnMut() -> F,
) -> f64 {
    let mut rates: Vec<f64> = (0..samples)
        .map(|_| items as f64 / timed(runtime, 1, &mut one).as_secs_f64())
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn memory(setup: &Setup) -> (i64, i64, i64) {
    let mut conn = setup.server.connection();
    let usage = |conn: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(conn)
            .unwrap_or(-1)
    };
    let key = "memory".to_owned();
    let hash = format!(
        "bench:k:{}",
        serde_json::to_string(&key).expect("a string encodes")
    );
    let running = setup
        .runtime
        .block_on(setup.owner.run(key.clone(), |_cx| {
            stream::iter([payload(0)]).chain(stream::pending())
        }))
        .expect("a fresh key is idle");
    setup
        .runtime
        .block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    let running_bytes = usage(&mut conn, &hash);
    let leases: i64 = redis::cmd("ZCARD")
        .arg("bench:leases")
        .query(&mut conn)
        .unwrap_or(0);
    let lease_bytes = usage(&mut conn, "bench:leases") / leases.max(1);
    setup.runtime.block_on(async {
        setup.owner.stop(&key, None).await.expect("it runs");
        running.await;
    });
    let idle_bytes = usage(&mut conn, &hash);
    (idle_bytes, running_bytes, lease_bytes)
}

fn peer_memory(setup: &Setup) -> i64 {
    let mut conn = setup.server.connection();
    let key = fresh("memory");
    let (handle, _) = setup
        .runtime
        .block_on(setup.peer_owner.run(&key, stream::pending::<String>()))
        .expect("a fresh key is free");
    let bytes = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("peer:lock:{key}"))
        .arg("SAMPLES")
        .arg(0)
        .query(&mut conn)
        .unwrap_or(-1);
    setup.runtime.block_on(async {
        setup.peer_stopper.stop(&key).await;
        handle.await.expect("the run's task");
    });
    bytes
}

use futures::StreamExt as _;

/// The figures criterion does not give: percentiles, bytes, and ratios from this same run.
fn summary(setup: &Setup, fsync: &Setup, quick: bool) {
    let samples = if quick { 30 } else { 500 };
    let mut ours: Vec<Duration> = (0..samples)
        .map(|_| setup.runtime.block_on(setup.keyrunner_stop_abort()))
        .collect();
    let mut peer: Vec<Duration> = (0..samples)
        .map(|_| setup.runtime.block_on(setup.peer_stop_abort()))
        .collect();
    ours.sort_unstable();
    peer.sort_unstable();
    println!(
        "\ncluster summary ({} mode, same run, same private Redis)",
        if quick { "quick" } else { "full" }
    );
    println!(
        "  stop → abort, keyrunner-redis: p50 {:?}, p99 {:?}; hand-rolled: p50 {:?}, p99 {:?} ({samples} stops each)",
        percentile(&ours, 0.5),
        percentile(&ours, 0.99),
        percentile(&peer, 0.5),
        percentile(&peer, 0.99)
    );
    let reps = if quick { 3 } else { 9 };
    for (name, setup) in [("persistence off", setup), ("appendfsync always", fsync)] {
        let items = payloads(ITEMS);
        let ours = items_per_second(&setup.runtime, ITEMS, reps, || {
            setup.keyrunner_run(fresh("summary"), payloads(ITEMS))
        });
        let raw = items_per_second(&setup.runtime, ITEMS, reps, || async {
            setup.publish_pipelined(&[fresh("channel")], &items).await
        });
        let peer = items_per_second(&setup.runtime, ITEMS, reps.min(3), || async {
            setup.peer_run(&fresh("summary"), payloads(ITEMS)).await
        });
        println!(
            "  progress, one key, {name}: keyrunner-redis {ours:.0} items/s, pipelined PUBLISH {raw:.0}/s ({:.2}×), hand-rolled {peer:.0}/s",
            ours / raw
        );
    }
    let total = KEYS * ITEMS_PER_KEY;
    let items = payloads(total);
    let channels: Vec<String> = (0..KEYS).map(|_| fresh("channel")).collect();
    let ours = items_per_second(&setup.runtime, total, reps, || async {
        futures::future::join_all(
            (0..KEYS).map(|_| setup.keyrunner_run(fresh("summary"), payloads(ITEMS_PER_KEY))),
        )
        .await;
    });
    let raw = items_per_second(&setup.runtime, total, reps, || {
        setup.publish_pipelined(&channels, &items)
    });
    println!(
        "  progress, {KEYS} keys × {ITEMS_PER_KEY} items: keyrunner-redis {ours:.0} items/s, pipelined PUBLISH {raw:.0}/s ({:.2}×)",
        ours / raw
    );
    let (idle, running, lease) = memory(setup);
    println!(
        "  Redis bytes per key: idle {idle} (hash), running {running} (hash) + {lease} (lease-set entry, average); hand-rolled running {} (lock), idle 0",
        peer_memory(setup)
    );
}

fn benches(c: &mut Criterion) {
    let setup = Setup::new(Persistence::None);
    let fsync = Setup::new(Persistence::AppendAlways);
    cycle(c, &setup);
    progress(c, "cluster_progress_per_key", &setup);
    progress_many(c, &setup);
    progress(c, "cluster_progress_per_key_fsync", &fsync);
    stop_abort(c, &setup);
    // `cargo xtask bench --quick` gives criterion a 0.2 s measurement time.
    let quick = std::env::args().any(|arg| arg == "0.2");
    summary(&setup, &fsync, quick);
}

criterion_group!(cluster, benches);
criterion_main!(cluster);
