//! Keyed pub-sub against its peers: `next` to a key nobody listens to, and listen + unsubscribe
//! on a fresh key, each with 1,000 other live keys.
//!
//! With `KEYRUNNER_BENCH_LOOP="<benchmark id> <iterations>"` set, the binary skips criterion
//! and runs that one measurement's body the given number of times, for
//! `valgrind --tool=callgrind` (see `docs/benchmarks.md`).

#[path = "peers/pubsub.rs"]
mod peers;

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use keyrunner::pub_sub::PubSub;

/// Keys listened to during every measurement.
const LIVE_KEYS: u64 = 1_000;
/// Keys at or above this are never listened to before the measurement uses them.
const FRESH: u64 = 1 << 32;

fn listener(value: &u64) {
    black_box(value);
}

fn unwatched_next(c: &mut Criterion) {
    let mut group = c.benchmark_group("pubsub_next_unwatched");

    let keyrunner: PubSub<u64, u64> = PubSub::new();
    let live: Vec<_> = (0..LIVE_KEYS)
        .map(|k| keyrunner.listen(k, listener, false))
        .collect();
    group.bench_function("keyrunner", |b| {
        b.iter(|| keyrunner.next(black_box(FRESH), black_box(1)));
    });
    drop(live);

    let map = peers::MutexMap::new();
    let live: Vec<_> = (0..LIVE_KEYS).map(|k| map.listen(k, listener)).collect();
    group.bench_function("mutex_hashmap", |b| {
        b.iter(|| map.next(black_box(FRESH), black_box(1)));
    });
    drop(live);

    let dash = peers::DashMapPubSub::new();
    let live: Vec<_> = (0..LIVE_KEYS).map(|k| dash.listen(k, listener)).collect();
    group.bench_function("dashmap", |b| {
        b.iter(|| dash.next(black_box(FRESH), black_box(1)));
    });
    drop(live);
    group.finish();
}

fn listen_unsubscribe(c: &mut Criterion) {
    let mut group = c.benchmark_group("pubsub_listen_unsubscribe");

    let keyrunner: PubSub<u64, u64> = PubSub::new();
    let live: Vec<_> = (0..LIVE_KEYS)
        .map(|k| keyrunner.listen(k, listener, false))
        .collect();
    let mut key = FRESH;
    group.bench_function("keyrunner", |b| {
        b.iter(|| {
            key += 1;
            keyrunner.listen(key, listener, false).unsubscribe();
        });
    });
    drop(live);

    let map = peers::MutexMap::new();
    let live: Vec<_> = (0..LIVE_KEYS).map(|k| map.listen(k, listener)).collect();
    let mut key = FRESH;
    group.bench_function("mutex_hashmap", |b| {
        b.iter(|| {
            key += 1;
            drop(map.listen(key, listener));
        });
    });
    drop(live);

    let dash = peers::DashMapPubSub::new();
    let live: Vec<_> = (0..LIVE_KEYS).map(|k| dash.listen(k, listener)).collect();
    let mut key = FRESH;
    group.bench_function("dashmap", |b| {
        b.iter(|| {
            key += 1;
            drop(dash.listen(key, listener));
        });
    });
    drop(live);
    group.finish();
}

/// The body of one measurement, run `iterations` times, for an instruction count.
fn instruction_loop(id: &str, iterations: u64) {
    let mut key = FRESH;
    match id {
        "pubsub_next_unwatched/keyrunner" | "pubsub_listen_unsubscribe/keyrunner" => {
            let keyrunner: PubSub<u64, u64> = PubSub::new();
            let _live: Vec<_> = (0..LIVE_KEYS)
                .map(|k| keyrunner.listen(k, listener, false))
                .collect();
            if id.starts_with("pubsub_next") {
                (0..iterations).for_each(|_| keyrunner.next(black_box(FRESH), black_box(1)));
            } else {
                for _ in 0..iterations {
                    key += 1;
                    keyrunner.listen(key, listener, false).unsubscribe();
                }
            }
        }
        "pubsub_next_unwatched/mutex_hashmap" | "pubsub_listen_unsubscribe/mutex_hashmap" => {
            let map = peers::MutexMap::new();
            let _live: Vec<_> = (0..LIVE_KEYS).map(|k| map.listen(k, listener)).collect();
            if id.starts_with("pubsub_next") {
                (0..iterations).for_each(|_| map.next(black_box(FRESH), black_box(1)));
            } else {
                for _ in 0..iterations {
                    key += 1;
                    drop(map.listen(key, listener));
                }
            }
        }
        "pubsub_next_unwatched/dashmap" | "pubsub_listen_unsubscribe/dashmap" => {
            let dash = peers::DashMapPubSub::new();
            let _live: Vec<_> = (0..LIVE_KEYS).map(|k| dash.listen(k, listener)).collect();
            if id.starts_with("pubsub_next") {
                (0..iterations).for_each(|_| dash.next(black_box(FRESH), black_box(1)));
            } else {
                for _ in 0..iterations {
                    key += 1;
                    drop(dash.listen(key, listener));
                }
            }
        }
        _ => panic!("no instruction loop for {id:?}"),
    }
}

criterion_group!(benches, unwatched_next, listen_unsubscribe);

fn main() {
    keyrunner_benches::criterion_or_loop(instruction_loop, || {
        benches();
        Criterion::default().configure_from_args().final_summary();
    });
}
