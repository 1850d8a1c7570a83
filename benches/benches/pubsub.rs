//! Keyed pub-sub against its peers: `next` to a key nobody listens to, and listen + unsubscribe
//! on a fresh key, each with 1,000 other live keys.

#[path = "peers/pubsub.rs"]
mod peers;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
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

criterion_group!(benches, unwatched_next, listen_unsubscribe);
criterion_main!(benches);
