//! Memory per running key, per listener and per forgotten key, for keyrunner and the hand-rolled
//! runner, counted by a counting global allocator; and a check that `next` to a pub-sub key
//! nobody listens to allocates nothing.
//!
//! `cargo run --release -p keyrunner-benches --example memory [-- --quick]`

#[path = "../benches/peers/runner.rs"]
#[allow(dead_code, reason = "the runner bench uses the rest")]
mod peers;

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use futures::stream;
use keyrunner::pub_sub::PubSub;
use keyrunner::tokio::TokioSpawner;
use keyrunner::{StateNode, TaskRunnerRepository};
use peers::{HandRolled, PeerSpawn};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};
use tokio::runtime::Handle;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Polls of [`never`] streams, so the measurement knows every task has started.
static POLLED: AtomicUsize = AtomicUsize::new(0);

/// The task's stream: `stream::pending()` that counts its polls. Zero-sized, like `pending()`.
fn never(_: impl Sized) -> impl futures::Stream<Item = u64> + Send + 'static {
    stream::poll_fn(|_| {
        POLLED.fetch_add(1, Ordering::Relaxed);
        Poll::<Option<u64>>::Pending
    })
}

/// Bytes and allocations still live, per item.
#[derive(Clone, Copy)]
struct PerItem {
    bytes: f64,
    allocations: f64,
}

impl PerItem {
    fn of(change: Stats, items: usize, own_bytes: usize) -> Self {
        // A reallocation's growth or shrinkage is already in these two totals.
        let bytes = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
        let allocations = change.allocations as f64 - change.deallocations as f64;
        Self {
            bytes: bytes / items as f64 - own_bytes as f64,
            allocations: allocations / items as f64,
        }
    }
}

/// What one implementation costs.
struct Report {
    running: PerItem,
    listener: PerItem,
    forgotten: PerItem,
}

/// Yields to the runtime until `done` says so.
async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::task::yield_now().await;
    }
}

fn alive_tasks() -> usize {
    Handle::current().metrics().num_alive_tasks()
}

/// The operations a measurement needs, for keyrunner and for the hand-roll alike.
trait Runner {
    type Listener;
    fn start(&self, key: u64);
    fn stop(&self, key: u64);
    fn listen(&self, key: u64) -> Self::Listener;
    fn shrink_to_fit(&self);
}

impl Runner for TaskRunnerRepository<u64, u64> {
    type Listener = keyrunner::Subscription;

    fn start(&self, key: u64) {
        self.run(key, never)
            .expect("every key is idle when a round starts")
            .detach();
    }

    fn stop(&self, key: u64) {
        match self.state_node(key) {
            StateNode::Running(running) => {
                running.stop(None).expect("nothing else stops this run");
            }
            StateNode::Idle(_) => unreachable!("a never-ending run is still running"),
        }
    }

    fn listen(&self, key: u64) -> Self::Listener {
        TaskRunnerRepository::listen(
            self,
            key,
            |state| {
                black_box(state);
            },
            false,
        )
    }

    fn shrink_to_fit(&self) {
        TaskRunnerRepository::shrink_to_fit(self);
    }
}

impl<P: PeerSpawn> Runner for HandRolled<u64, u64, P> {
    type Listener = tokio::sync::watch::Receiver<peers::PeerState<u64>>;

    fn start(&self, key: u64) {
        drop(
            self.run(key, never)
                .expect("every key is idle when a round starts"),
        );
    }

    fn stop(&self, key: u64) {
        assert!(
            HandRolled::stop(self, &key),
            "a never-ending run is still running"
        );
    }

    fn listen(&self, key: u64) -> Self::Listener {
        self.subscribe(key)
    }

    fn shrink_to_fit(&self) {
        HandRolled::shrink_to_fit(self);
    }
}

/// The floor: `tokio::spawn` of a task polling the stream, aborted through its `JoinHandle`.
struct SpawnFloor {
    handles: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl SpawnFloor {
    fn new(keys: usize) -> Self {
        Self {
            handles: std::sync::Mutex::new(Vec::with_capacity(keys)),
        }
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Runner for SpawnFloor {
    type Listener = ();

    fn start(&self, key: u64) {
        let handle = tokio::spawn(async move {
            black_box(futures::StreamExt::next(&mut std::pin::pin!(never(key))).await);
        });
        self.handles().push(handle);
    }

    fn stop(&self, key: u64) {
        let index = usize::try_from(key).expect("keys are indices of `handles`");
        self.handles()[index].abort();
    }

    fn listen(&self, _: u64) {}

    fn shrink_to_fit(&self) {
        // Keeps the capacity reserved up front: the floor's bookkeeping is not what is measured.
        self.handles().clear();
    }
}

/// Runs `keys` never-ending tasks, adds `listeners` listeners to one of them, then stops every
/// run and shrinks.
async fn round(runner: &impl Runner, keys: usize, listeners: usize) -> Report {
    let own = std::mem::size_of_val(&never(()));
    POLLED.store(0, Ordering::Relaxed);
    let whole = Region::new(GLOBAL);
    let region = Region::new(GLOBAL);
    for key in 0..keys as u64 {
        runner.start(key);
    }
    until(|| POLLED.load(Ordering::Relaxed) >= keys).await;
    let running = PerItem::of(region.change(), keys, own);

    let mut held = Vec::with_capacity(listeners);
    let region = Region::new(GLOBAL);
    held.extend((0..listeners).map(|_| runner.listen(0)));
    let listener = PerItem::of(region.change(), listeners, 0);
    drop(held);

    for key in 0..keys as u64 {
        runner.stop(key);
    }
    until(|| alive_tasks() == 0).await;
    runner.shrink_to_fit();
    let forgotten = PerItem::of(whole.change(), keys, 0);
    Report {
        running,
        listener,
        forgotten,
    }
}

/// Two rounds on a fresh current-thread runtime; the second is reported, so the runtime's own
/// queues have grown already and are not counted.
fn measure<R: Runner>(make: impl FnOnce() -> R, keys: usize, listeners: usize) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime needs no OS resources beyond memory");
    runtime.block_on(async {
        let runner = make();
        round(&runner, keys, listeners).await;
        round(&runner, keys, listeners).await
    })
}

/// `next` to a key nobody listens to, with 1,000 live keys: how many allocations 10,000 calls
/// make.
fn unwatched_next_allocations() -> usize {
    let topics: PubSub<u64, u64> = PubSub::new();
    let live: Vec<_> = (0..1_000)
        .map(|key| {
            topics.listen(
                key,
                |value| {
                    black_box(value);
                },
                false,
            )
        })
        .collect();
    let region = Region::new(GLOBAL);
    for key in 0..10_000_u64 {
        topics.next(1_000_000 + key, key);
    }
    let change = region.change();
    drop(live);
    change.allocations + change.reallocations
}

fn row(name: &str, measured: [PerItem; 3]) {
    let cells: Vec<String> = measured
        .iter()
        .map(|item| format!("{:.0} B, {:.2} allocations", item.bytes, item.allocations))
        .collect();
    println!("| {name} | {} |", cells.join(" | "));
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (keys, listeners) = if quick {
        (1_000, 100)
    } else {
        (100_000, 1_000)
    };

    let allocations = unwatched_next_allocations();
    println!(
        "pub-sub `next` to an unwatched key, 1,000 live keys: {allocations} allocations in 10,000 calls"
    );
    assert_eq!(
        allocations, 0,
        "`next` to an unwatched key must not allocate"
    );

    let keyrunner = measure(
        || TaskRunnerRepository::<u64, u64>::new(TokioSpawner::current()),
        keys,
        listeners,
    );
    let peer = measure(
        || HandRolled::<u64, u64, _>::new(peers::Tokio),
        keys,
        listeners,
    );
    let floor = measure(|| SpawnFloor::new(keys), keys, listeners);

    println!();
    println!(
        "memory, tokio current_thread: {keys} running keys (the task's own stream excluded), \
         {listeners} listeners on one key, then every run stopped and `shrink_to_fit`"
    );
    println!();
    println!(
        "| per | keyrunner | hand-rolled (DashMap + CancellationToken + watch) | tokio::spawn floor |"
    );
    println!("|---|---|---|---|");
    let all = |pick: fn(&Report) -> PerItem| [pick(&keyrunner), pick(&peer), pick(&floor)];
    row("running key", all(|report| report.running));
    row("listener", all(|report| report.listener));
    row("forgotten key", all(|report| report.forgotten));
    let verdict = |met: bool| if met { "met" } else { "missed" };
    println!();
    println!(
        "target: <= 400 B per running key: {} ({:.0} B); 0 B per forgotten key: {} ({:.1} B)",
        verdict(keyrunner.running.bytes <= 400.0),
        keyrunner.running.bytes,
        verdict(keyrunner.forgotten.bytes <= 0.5),
        keyrunner.forgotten.bytes,
    );
}
