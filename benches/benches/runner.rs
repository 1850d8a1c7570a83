//! The task runner repository against the hand-rolled runner and the bare spawn floor: run → one
//! item → completion → idle on 1, 100 and 10,000 keys at once, and run + stop, on tokio
//! current_thread, tokio multi_thread (2 workers) and smol.
//!
//! With `KEYRUNNER_BENCH_LOOP="<benchmark id> <iterations>"` set, the binary skips criterion
//! and runs that one measurement's body the given number of times on tokio current_thread, for
//! `valgrind --tool=callgrind` (see `docs/benchmarks.md`); two more ids,
//! `runner_items_current_thread/{keyrunner,hand_rolled}`, run one task streaming that many
//! items.

#[path = "peers/runner.rs"]
#[allow(dead_code, reason = "the memory example uses the rest")]
mod peers;

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
};
use futures::{StreamExt, stream};
use keyrunner::smol::SmolSpawner;
use keyrunner::tokio::TokioSpawner;
use keyrunner::{Outcome, StateNode, TaskRunnerRepository};
use peers::{HandRolled, PeerOutcome, PeerSpawn};

const KEYS: [u64; 3] = [1, 100, 10_000];

/// The executor a group runs on.
enum Runtime {
    Tokio(tokio::runtime::Runtime),
    Smol(Arc<smol::Executor<'static>>),
}

impl Runtime {
    fn current_thread() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime needs no OS resources beyond memory");
        Self::Tokio(runtime)
    }

    fn multi_thread() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a 2-worker runtime builds unless the OS refuses threads");
        Self::Tokio(runtime)
    }

    fn smol() -> Self {
        Self::Smol(Arc::new(smol::Executor::new()))
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Self::Tokio(runtime) => runtime.block_on(future),
            Self::Smol(executor) => smol::block_on(executor.run(future)),
        }
    }

    fn repository(&self) -> TaskRunnerRepository<u64, u64> {
        match self {
            Self::Tokio(runtime) => {
                TaskRunnerRepository::new(TokioSpawner::new(runtime.handle().clone()))
            }
            Self::Smol(executor) => {
                TaskRunnerRepository::new(SmolSpawner::new(Arc::clone(executor)))
            }
        }
    }

    /// Runs `bench` with this runtime's peer spawner.
    fn with_peer<R>(&self, bench: impl PeerBench<R>) -> R {
        match self {
            Self::Tokio(_) => bench.run(peers::Tokio),
            Self::Smol(executor) => bench.run(peers::Smol(Arc::clone(executor))),
        }
    }
}

/// Something generic over the peer spawner (a closure cannot be).
trait PeerBench<R> {
    fn run<P: PeerSpawn>(self, spawner: P) -> R;
}

/// Starts `n` runs with `start`, then awaits them all; `handles` is reused between iterations.
async fn all<H: Future>(n: u64, handles: &mut Vec<H>, mut start: impl FnMut(u64) -> H) {
    if n == 1 {
        black_box(start(0).await);
        return;
    }
    handles.extend((0..n).map(&mut start));
    for handle in handles.drain(..) {
        black_box(handle.await);
    }
}

/// Time for `iters` rounds of `round`.
fn timed<F: Future<Output = ()>>(
    runtime: &Runtime,
    iters: u64,
    mut round: impl FnMut() -> F,
) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            round().await;
        }
        start.elapsed()
    })
}

/// Time for `iters` rounds of [`all`].
fn timed_all<H: Future>(
    runtime: &Runtime,
    iters: u64,
    n: u64,
    handles: &mut Vec<H>,
    mut start: impl FnMut(u64) -> H,
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            all(n, handles, &mut start).await;
        }
        started.elapsed()
    })
}

fn one_item(_: impl Sized) -> stream::Iter<std::array::IntoIter<u64, 1>> {
    stream::iter([1])
}

struct PeerCycle<'a, 'b> {
    group: &'a mut BenchmarkGroup<'b, WallTime>,
    runtime: &'a Runtime,
    keys: u64,
}

impl PeerBench<()> for PeerCycle<'_, '_> {
    fn run<P: PeerSpawn>(self, spawner: P) {
        let Self {
            group,
            runtime,
            keys,
        } = self;
        let peer: HandRolled<u64, u64, P> = HandRolled::new(spawner);
        let mut handles = Vec::new();
        group.bench_function(BenchmarkId::new("hand_rolled", keys), |b| {
            b.iter_custom(|iters| {
                timed_all(runtime, iters, keys, &mut handles, |key| {
                    peer.run(key, one_item)
                        .expect("the key is idle: every earlier run on it was awaited")
                })
            });
        });
        assert_eq!(
            peer.len(),
            0,
            "the hand-roll forgets idle keys nobody watches"
        );
    }
}

struct FloorCycle<'a, 'b> {
    group: &'a mut BenchmarkGroup<'b, WallTime>,
    runtime: &'a Runtime,
    keys: u64,
}

impl PeerBench<()> for FloorCycle<'_, '_> {
    fn run<P: PeerSpawn>(self, spawner: P) {
        let Self {
            group,
            runtime,
            keys,
        } = self;
        let mut handles = Vec::new();
        group.bench_function(BenchmarkId::new("spawn_join", keys), |b| {
            b.iter_custom(|iters| {
                timed_all(runtime, iters, keys, &mut handles, |key| {
                    spawner.spawn(async move {
                        one_item(key)
                            .for_each(|item| async move {
                                black_box(item);
                            })
                            .await;
                        PeerOutcome::Completed
                    })
                })
            });
        });
    }
}

fn cycle_group(c: &mut Criterion, name: &str, runtime: &Runtime) {
    let mut group = c.benchmark_group(name);
    for keys in KEYS {
        group.throughput(Throughput::Elements(keys));
        if keys >= 10_000 {
            // Tens of milliseconds per iteration: ten flat samples keep the run short.
            group.sample_size(10).sampling_mode(SamplingMode::Flat);
        }
        let repository = runtime.repository();
        let mut handles = Vec::new();
        group.bench_function(BenchmarkId::new("keyrunner", keys), |b| {
            b.iter_custom(|iters| {
                timed_all(runtime, iters, keys, &mut handles, |key| {
                    repository
                        .run(key, one_item)
                        .expect("the key is idle: every earlier run on it was awaited")
                })
            });
        });
        assert!(
            repository.is_empty(),
            "keyrunner forgets idle keys nobody watches"
        );
        runtime.with_peer(PeerCycle {
            group: &mut group,
            runtime,
            keys,
        });
        runtime.with_peer(FloorCycle {
            group: &mut group,
            runtime,
            keys,
        });
    }
    group.finish();
}

struct PeerStop<'a, 'b> {
    group: &'a mut BenchmarkGroup<'b, WallTime>,
    runtime: &'a Runtime,
}

impl PeerBench<()> for PeerStop<'_, '_> {
    fn run<P: PeerSpawn>(self, spawner: P) {
        let Self { group, runtime } = self;
        let peer: HandRolled<u64, u64, P> = HandRolled::new(spawner.clone());
        group.bench_function("hand_rolled", |b| {
            b.iter_custom(|iters| {
                timed(runtime, iters, || {
                    let handle = peer
                        .run(0, |_| stream::pending())
                        .expect("the key is idle: the earlier run was stopped and awaited");
                    assert!(peer.stop(&0), "the run was going on");
                    async move {
                        assert_eq!(handle.await, PeerOutcome::Stopped);
                    }
                })
            });
        });
        let spawner = &spawner;
        group.bench_function("spawn_abort", |b| {
            b.iter_custom(|iters| {
                timed(runtime, iters, || {
                    let handle = spawner.spawn(async {
                        stream::pending::<u64>().next().await;
                        PeerOutcome::Completed
                    });
                    P::cancel(handle)
                })
            });
        });
    }
}

fn stop_group(c: &mut Criterion, name: &str, runtime: &Runtime) {
    let mut group = c.benchmark_group(name);
    let repository = runtime.repository();
    group.bench_function("keyrunner", |b| {
        b.iter_custom(|iters| {
            timed(runtime, iters, || {
                let handle = repository
                    .run(0, |_| stream::pending::<u64>())
                    .expect("the key is idle: the earlier run was stopped and awaited");
                match repository.state_node(0) {
                    StateNode::Running(running) => {
                        running
                            .stop(None)
                            .expect("it is still the run just started");
                    }
                    StateNode::Idle(_) => unreachable!("the run was just started"),
                }
                async move {
                    assert_eq!(handle.await, Outcome::Stopped { reason: None });
                }
            })
        });
    });
    runtime.with_peer(PeerStop {
        group: &mut group,
        runtime,
    });
    group.finish();
}

fn current_thread(c: &mut Criterion) {
    let runtime = Runtime::current_thread();
    cycle_group(c, "runner_cycle_current_thread", &runtime);
    stop_group(c, "runner_stop_current_thread", &runtime);
}

fn multi_thread(c: &mut Criterion) {
    let runtime = Runtime::multi_thread();
    cycle_group(c, "runner_cycle_multi_thread", &runtime);
    stop_group(c, "runner_stop_multi_thread", &runtime);
}

fn smol(c: &mut Criterion) {
    let runtime = Runtime::smol();
    cycle_group(c, "runner_cycle_smol", &runtime);
    stop_group(c, "runner_stop_smol", &runtime);
}

/// Runs the body of benchmark `id` `iterations` times on tokio current_thread, nothing else:
/// the instruction count of one iteration is the difference between two counts, divided.
fn instruction_loop(id: &str, iterations: u64) {
    let runtime = Runtime::current_thread();
    match id {
        "runner_cycle_current_thread/keyrunner/1" => {
            let repository = runtime.repository();
            let mut handles = Vec::new();
            timed_all(&runtime, iterations, 1, &mut handles, |key| {
                repository
                    .run(key, one_item)
                    .expect("the key is idle: every earlier run on it was awaited")
            });
            assert!(repository.is_empty(), "every idle key was forgotten");
        }
        "runner_cycle_current_thread/hand_rolled/1" => {
            let peer: HandRolled<u64, u64, peers::Tokio> = HandRolled::new(peers::Tokio);
            let mut handles = Vec::new();
            timed_all(&runtime, iterations, 1, &mut handles, |key| {
                peer.run(key, one_item)
                    .expect("the key is idle: every earlier run on it was awaited")
            });
        }
        "runner_cycle_current_thread/spawn_join/1" => {
            let spawner = peers::Tokio;
            let mut handles = Vec::new();
            timed_all(&runtime, iterations, 1, &mut handles, |key| {
                spawner.spawn(async move {
                    one_item(key)
                        .for_each(|item| async move {
                            black_box(item);
                        })
                        .await;
                    PeerOutcome::Completed
                })
            });
        }
        "runner_stop_current_thread/keyrunner" => {
            let repository = runtime.repository();
            timed(&runtime, iterations, || {
                let handle = repository
                    .run(0, |_| stream::pending::<u64>())
                    .expect("the key is idle: the earlier run was stopped and awaited");
                match repository.state_node(0) {
                    StateNode::Running(running) => {
                        running
                            .stop(None)
                            .expect("it is still the run just started");
                    }
                    StateNode::Idle(_) => unreachable!("the run was just started"),
                }
                async move {
                    assert_eq!(handle.await, Outcome::Stopped { reason: None });
                }
            });
        }
        "runner_stop_current_thread/hand_rolled" => {
            let peer: HandRolled<u64, u64, peers::Tokio> = HandRolled::new(peers::Tokio);
            timed(&runtime, iterations, || {
                let handle = peer
                    .run(0, |_| stream::pending())
                    .expect("the key is idle: the earlier run was stopped and awaited");
                assert!(peer.stop(&0), "the run was going on");
                async move {
                    assert_eq!(handle.await, PeerOutcome::Stopped);
                }
            });
        }
        "runner_stop_current_thread/spawn_abort" => {
            timed(&runtime, iterations, || {
                let handle = peers::Tokio.spawn(async {
                    stream::pending::<u64>().next().await;
                    PeerOutcome::Completed
                });
                <peers::Tokio as PeerSpawn>::cancel(handle)
            });
        }
        // Loop-only ids: one run whose stream yields `iterations` snapshots, so the difference
        // between two counts is the cost of the items alone.
        "runner_items_current_thread/keyrunner" => {
            let repository = runtime.repository();
            runtime.block_on(async {
                let handle = repository
                    .run(0, move |_| stream::iter(0..iterations))
                    .expect("a fresh key is idle");
                assert_eq!(handle.await, Outcome::Completed);
            });
        }
        "runner_items_current_thread/hand_rolled" => {
            let peer: HandRolled<u64, u64, peers::Tokio> = HandRolled::new(peers::Tokio);
            runtime.block_on(async {
                let handle = peer
                    .run(0, move |_| stream::iter(0..iterations))
                    .expect("a fresh key is idle");
                assert_eq!(handle.await, PeerOutcome::Completed);
            });
        }
        _ => panic!("no instruction loop for {id:?}"),
    }
}

criterion_group!(benches, current_thread, multi_thread, smol);

fn main() {
    keyrunner_benches::criterion_or_loop(instruction_loop, || {
        benches();
        Criterion::default().configure_from_args().final_summary();
    });
}
