//! Many threads listening, emitting and leaving on a few keys at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;

use keyrunner_pub_sub::PubSub;

const THREADS: usize = 4;
const ITERATIONS: usize = 5_000;
const KEYS: [&str; 3] = ["a", "b", "c"];

#[test]
fn concurrent_listen_next_unsubscribe_leaves_nothing_and_keeps_order() {
    // Keep keys whose last value is a multiple of 3, until told otherwise.
    let keep = Arc::new(AtomicBool::new(true));
    let keep_in_predicate = Arc::clone(&keep);
    let predicate_calls = Arc::new(AtomicUsize::new(0));
    let calls_in_predicate = Arc::clone(&predicate_calls);
    let topics = PubSub::<&'static str, u64>::builder()
        .should_cleanup(move |_, last| {
            calls_in_predicate.fetch_add(1, Ordering::Relaxed);
            !keep_in_predicate.load(Ordering::SeqCst) || last % 3 != 0
        })
        .build();
    let barrier = Barrier::new(THREADS);
    let deliveries = AtomicUsize::new(0);

    thread::scope(|scope| {
        for thread_index in 0..THREADS {
            let (topics, barrier, deliveries) = (&topics, &barrier, &deliveries);
            scope.spawn(move || {
                barrier.wait();
                for i in 0..ITERATIONS {
                    let key = KEYS[(thread_index + i) % KEYS.len()];
                    let log = Arc::new(Mutex::new(Vec::new()));
                    let sink = Arc::clone(&log);
                    let subscription = topics.listen(
                        key,
                        move |v: &u64| sink.lock().unwrap_or_else(PoisonError::into_inner).push(*v),
                        i % 2 == 0,
                    );
                    // Counters per key: each emission is the last value plus one, decided
                    // atomically, so the key's values are 1, 2, 3, ... in emission order.
                    let topic = topics.subject(key);
                    for _ in 0..3 {
                        topic.update(|last| Some(last.map_or(1, |v| v + 1)));
                    }
                    drop(topic);
                    // A plain `next` on a key nobody listens to for good measure: 1 is not a
                    // multiple of 3, so it is dropped (or emitted, if someone holds the key).
                    topics.next("unwatched", 1);
                    subscription.unsubscribe();

                    let log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    assert!(
                        log.windows(2).all(|pair| pair[1] == pair[0] + 1),
                        "out of order on {key}: {log:?}"
                    );
                    deliveries.fetch_add(log.len(), Ordering::Relaxed);
                }
            });
        }
    });

    // Emissions queued behind another thread's delivery may land after their emitter left, so
    // only "some" is certain.
    assert!(deliveries.load(Ordering::Relaxed) > 0);
    assert!(predicate_calls.load(Ordering::Relaxed) > 0);
    // Whatever is still allocated was kept by the predicate, with its last value.
    for (key, last) in topics.entries() {
        let last = last.as_deref().copied();
        assert!(
            last.is_some_and(|v| v % 3 == 0),
            "{key} kept with last value {last:?}"
        );
    }
    keep.store(false, Ordering::SeqCst);
    topics.sweep();
    assert_eq!(topics.len(), 0);
    assert!(!topics.is_allocated("unwatched"));
}

#[test]
fn concurrent_holders_of_one_key_free_it_exactly_when_the_last_leaves() {
    let topics: PubSub<u8, u64> = PubSub::new();
    let barrier = Barrier::new(THREADS);
    for _ in 0..200 {
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    let topic = topics.subject(0);
                    barrier.wait();
                    topic.next(1);
                    let subscription = topic.listen(|_| {}, true);
                    drop(topic);
                    assert!(
                        topics.is_allocated(&0),
                        "freed while a subscription holds it"
                    );
                    drop(subscription);
                });
            }
        });
        assert!(topics.is_empty());
    }
}
