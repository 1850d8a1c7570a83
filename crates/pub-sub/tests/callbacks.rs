//! Callbacks may call back: `initial_value` and `should_cleanup` run without any lock, so they
//! may read the same `PubSub` and allocate, publish to or release other keys; a slow
//! `initial_value` stalls only the callers of its own key; one that uses its own key panics
//! instead of hanging. Listeners of two keys removing each other's listeners cannot deadlock,
//! `next` to an unheld key asks the predicate once, and each operation hashes its key once.
//!
//! Each liveness claim runs under a watchdog ([`common::within_deadline`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasher;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, OnceLock, PoisonError};
use std::thread;

use keyrunner_pub_sub::{PubSub, Subscription};

mod common;
use common::{message, within_deadline};

/// A handle the callbacks of a `PubSub` can reach, filled in once it is built.
type Slot = Arc<OnceLock<PubSub<u32, u32>>>;

fn get(slot: &OnceLock<PubSub<u32, u32>>) -> &PubSub<u32, u32> {
    slot.get().expect("the pub-sub is stored before it is used")
}

#[test]
fn initial_value_may_read_the_pub_sub_and_use_other_keys() {
    within_deadline("initial values using their pub-sub", || {
        let slot: Slot = Arc::default();
        let topics = PubSub::builder()
            .initial_value({
                let slot = Arc::clone(&slot);
                move |key: &u32| {
                    if *key >= 100 {
                        return Some(0);
                    }
                    let topics = get(&slot);
                    assert!(topics.is_allocated(key));
                    assert_eq!(topics.last(&(100 + key)).as_deref(), Some(&0));
                    assert!(topics.topic_if_allocated(&(100 + key)).is_none());
                    // Publish to another key, listen to it, release it.
                    let other = topics.subject(100 + key);
                    other.next(*key);
                    drop(topics.listen(100 + key, |_| {}, true));
                    drop(other);
                    topics.next(200 + key, 1);
                    // The key below, through its own initial value: a chain.
                    let below = key.checked_sub(1).map_or(0, |below| {
                        *topics
                            .subject(below)
                            .last()
                            .expect("every key starts with a value")
                            + 1
                    });
                    Some(below)
                }
            })
            .build();
        assert!(slot.set(topics.clone()).is_ok());
        let top = topics.subject(3);
        assert_eq!(top.last().as_deref(), Some(&3));
        assert_eq!(
            topics.len(),
            1,
            "the keys below were freed when their holders left"
        );
        drop(top);
        assert!(topics.is_empty());
    });
}

#[test]
fn should_cleanup_may_read_the_pub_sub_and_use_other_keys() {
    within_deadline("a predicate using its pub-sub", || {
        let slot: Slot = Arc::default();
        // What the predicate saw of its own key: allocated, and its last value.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let topics = PubSub::builder()
            .should_cleanup({
                let (slot, seen) = (Arc::clone(&slot), Arc::clone(&seen));
                move |key: &u32, last: &u32| {
                    if *key >= 100 {
                        return true;
                    }
                    let topics = get(&slot);
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((topics.is_allocated(key), topics.last(key).map(|last| *last)));
                    // Other keys: published to, held and released.
                    topics.next(100 + key, *last);
                    drop(topics.subject(100 + key));
                    (*last).is_multiple_of(2)
                }
            })
            .build();
        assert!(slot.set(topics.clone()).is_ok());

        // A held key is judged when its last holder leaves, while still allocated.
        let topic = topics.subject(1);
        topic.next(2);
        drop(topic);
        assert!(!topics.is_allocated(&1), "an even last value is cleaned up");
        // An unheld key is judged before anything is allocated for it.
        topics.next(1, 3);
        assert!(topics.is_allocated(&1), "an odd one is kept");
        assert_eq!(topics.last(&1).as_deref(), Some(&3));
        assert_eq!(
            *seen.lock().unwrap_or_else(PoisonError::into_inner),
            [(true, Some(2)), (false, None)]
        );
    });
}

#[test]
fn initial_value_that_uses_its_own_key_panics_instead_of_hanging() {
    type Use = fn(&PubSub<u32, u32>, u32);
    let uses: [(&str, Use); 4] = [
        ("listen", |topics, key| {
            drop(topics.listen(key, |_| {}, false))
        }),
        ("next", |topics, key| topics.next(key, 1)),
        ("subject", |topics, key| drop(topics.subject(key))),
        ("last", |topics, key| drop(topics.last(&key))),
    ];
    for (name, use_key) in uses {
        let payload = within_deadline(name, move || {
            let slot: Slot = Arc::default();
            let topics = PubSub::builder()
                .initial_value({
                    let slot = Arc::clone(&slot);
                    move |key: &u32| {
                        use_key(get(&slot), *key);
                        Some(0)
                    }
                })
                .build();
            assert!(slot.set(topics.clone()).is_ok());
            let payload = catch_unwind(AssertUnwindSafe(|| drop(topics.subject(7))))
                .expect_err("using the key from its own initial value panics");
            assert!(topics.is_empty(), "nothing was allocated");
            message(&*payload).to_owned()
        });
        assert!(
            payload.contains("initializer") && payload.contains("its own key"),
            "{name}: {payload}"
        );
    }
}

#[test]
fn a_slow_initial_value_stalls_only_the_callers_of_its_key() {
    let (started, initializing) = mpsc::channel::<()>();
    let (finish, go) = mpsc::channel::<()>();
    let go = Mutex::new(go);
    let topics = PubSub::<u32, u32>::builder()
        .initial_value(move |key: &u32| {
            if *key == 1 {
                let _ = started.send(());
                let _ = go.lock().unwrap_or_else(PoisonError::into_inner).recv();
            }
            Some(*key * 10)
        })
        .build();
    let first = thread::spawn({
        let topics = topics.clone();
        move || topics.subject(1)
    });
    initializing.recv().expect("the slow initial value started");

    let others = topics.clone();
    within_deadline("other keys during a slow initial value", move || {
        let seen = Arc::new(AtomicUsize::new(0));
        let sink = Arc::clone(&seen);
        let subscription = others.listen(
            2,
            move |value: &u32| {
                sink.store(*value as usize, Ordering::SeqCst);
            },
            true,
        );
        assert_eq!(seen.load(Ordering::SeqCst), 20);
        others.next(2, 21);
        assert_eq!(seen.load(Ordering::SeqCst), 21);
        assert!(
            others.is_allocated(&1),
            "a key counts as allocated while it is created"
        );
        drop(subscription);
        assert!(!others.is_allocated(&2));
    });

    let second = thread::spawn({
        let topics = topics.clone();
        move || topics.subject(1)
    });
    finish.send(()).expect("the initial value waits for this");
    let (first, second) = (
        first.join().expect("no panic"),
        second.join().expect("no panic"),
    );
    first.next(11);
    assert_eq!(
        second.last().as_deref(),
        Some(&11),
        "both callers share one topic"
    );
    drop((first, second));
    assert!(topics.is_empty());
}

#[test]
fn next_to_an_unheld_key_asks_the_predicate_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let topics = PubSub::<u32, u32>::builder()
        .should_cleanup({
            let calls = Arc::clone(&calls);
            move |_, last| {
                calls.fetch_add(1, Ordering::SeqCst);
                *last == 0
            }
        })
        .build();
    topics.next(1, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "cleaned up: asked once");
    assert!(topics.is_empty());
    topics.next(1, 5);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "kept: asked once more, not twice"
    );
    assert_eq!(topics.last(&1).as_deref(), Some(&5));
    // A kept key's momentary hold in `next` is a release to zero like any other.
    topics.next(1, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(topics.is_empty());
}

#[test]
fn listeners_of_two_keys_removing_each_others_listeners_do_not_deadlock() {
    within_deadline("cross removals between keys", || {
        type Victim = Arc<Mutex<Option<Subscription<&'static str, u32>>>>;
        let topics: PubSub<&'static str, u32> = PubSub::new();
        let victim =
            |key| -> Victim { Arc::new(Mutex::new(Some(topics.listen(key, |_| {}, false)))) };
        let (victim_a, victim_b) = (victim("a"), victim("b"));
        let both_in_flight = Arc::new(Barrier::new(2));
        let remover = |victim: &Victim| {
            let (victim, both_in_flight) = (Arc::clone(victim), Arc::clone(&both_in_flight));
            move |_: &u32| {
                both_in_flight.wait();
                drop(victim.lock().unwrap_or_else(PoisonError::into_inner).take());
            }
        };
        let on_a = topics.listen("a", remover(&victim_b), false);
        let on_b = topics.listen("b", remover(&victim_a), false);
        let other = topics.clone();
        let thread_b = thread::spawn(move || other.next("b", 1));
        topics.next("a", 1);
        thread_b.join().expect("no panic");
        drop((on_a, on_b));
        assert!(topics.is_empty(), "every holder left");
    });
}

/// Builds `DefaultHasher`s and counts how many it built.
#[derive(Clone, Default)]
struct CountingHasher(Arc<AtomicUsize>);

impl BuildHasher for CountingHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        self.0.fetch_add(1, Ordering::SeqCst);
        DefaultHasher::new()
    }
}

#[test]
fn each_operation_hashes_its_key_once() {
    let hasher = CountingHasher::default();
    let topics = PubSub::<u32, u32>::builder()
        .should_cleanup(|_, last| *last == 0)
        .hasher(hasher.clone())
        .build();
    let hashes = |f: &mut dyn FnMut()| {
        let before = hasher.0.load(Ordering::SeqCst);
        f();
        hasher.0.load(Ordering::SeqCst) - before
    };
    let mut subscription = None;
    assert_eq!(
        hashes(&mut || subscription = Some(topics.listen(1, |_| {}, false))),
        1,
        "listen"
    );
    assert_eq!(hashes(&mut || topics.next(1, 1)), 1, "next, held key");
    assert_eq!(
        hashes(&mut || drop(subscription.take())),
        0,
        "unsubscribe, the key kept"
    );
    assert_eq!(
        hashes(&mut || topics.next(1, 0)),
        1,
        "next, kept key, then freed"
    );
    assert_eq!(
        hashes(&mut || topics.next(2, 0)),
        1,
        "next, unheld key, dropped"
    );
    assert_eq!(
        hashes(&mut || topics.next(3, 3)),
        1,
        "next, unheld key, kept"
    );
    assert_eq!(hashes(&mut || drop(topics.last(&3))), 1, "last");
}
