//! Listeners calling back into the same `PubSub`, and panicking listeners.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use keyrunner_pub_sub::{PubSub, Subscription};

mod common;
use common::{push, seen};

type Log = Arc<Mutex<Vec<(&'static str, u32)>>>;

#[test]
fn listener_emits_on_another_key_and_listens_on_its_own() {
    let topics: PubSub<&'static str, u32> = PubSub::new();
    let log: Log = Arc::default();
    let added: Arc<Mutex<Vec<Subscription<&'static str, u32>>>> = Arc::default();

    let (inner_topics, inner_log, inner_added) =
        (topics.clone(), Arc::clone(&log), Arc::clone(&added));
    let _other = {
        let log = Arc::clone(&log);
        topics.listen("other", move |v: &u32| push(&log, ("other", *v)), false)
    };
    let subscription = topics.listen(
        "main",
        move |v: &u32| {
            push(&inner_log, ("main", *v));
            // Emit on another key and read this key's last value: no deadlock.
            inner_topics.next("other", v * 10);
            assert_eq!(inner_topics.last(&"main").as_deref(), Some(v));
            // Listen on this very key, with the immediate value.
            let log = Arc::clone(&inner_log);
            let late = inner_topics.listen("main", move |v: &u32| push(&log, ("late", *v)), true);
            inner_added
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(late);
        },
        false,
    );

    topics.next("main", 1);
    assert_eq!(seen(&log), [("main", 1), ("other", 10), ("late", 1)]);

    topics.next("main", 2);
    let after = seen(&log);
    assert_eq!(&after[..3], [("main", 1), ("other", 10), ("late", 1)]);
    // The second emission reaches the listener added during the first one.
    assert!(after.contains(&("late", 2)), "{after:?}");
    assert!(after.contains(&("other", 20)), "{after:?}");

    drop(subscription);
    added.lock().unwrap_or_else(PoisonError::into_inner).clear();
    drop(_other);
    assert!(
        topics.is_empty(),
        "every lease taken from inside a listener was released"
    );
}

#[test]
fn nested_next_on_the_same_key_is_breadth_first() {
    let topics: PubSub<&'static str, u32> = PubSub::new();
    let log: Log = Arc::default();
    let (inner_topics, a_log) = (topics.clone(), Arc::clone(&log));
    let _a = topics.listen(
        "k",
        move |v: &u32| {
            push(&a_log, ("a", *v));
            if *v == 1 {
                inner_topics.next("k", 2);
            }
        },
        false,
    );
    let b_log = Arc::clone(&log);
    let _b = topics.listen("k", move |v: &u32| push(&b_log, ("b", *v)), false);

    topics.next("k", 1);
    assert_eq!(seen(&log), [("a", 1), ("b", 1), ("a", 2), ("b", 2)]);
}

#[test]
fn listener_unsubscribing_itself_releases_the_key() {
    let topics: PubSub<&'static str, u32> = PubSub::new();
    let own: Arc<Mutex<Option<Subscription<&'static str, u32>>>> = Arc::default();
    let own_in_listener = Arc::clone(&own);
    let subscription = topics.listen(
        "k",
        move |_: &u32| {
            if let Some(subscription) = own_in_listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                subscription.unsubscribe();
            }
        },
        false,
    );
    *own.lock().unwrap_or_else(PoisonError::into_inner) = Some(subscription);
    topics.next("k", 1);
    assert!(!topics.is_allocated("k"));
}

#[test]
fn panicking_listener_does_not_stop_the_others_and_resurfaces_from_next() {
    let topics: PubSub<&'static str, u32> = PubSub::new();
    let log: Log = Arc::default();
    let first_log = Arc::clone(&log);
    let _first = topics.listen("k", move |v: &u32| push(&first_log, ("first", *v)), false);
    let _panicking = topics.listen(
        "k",
        |v: &u32| {
            if *v == 1 {
                panic!("listener failed on {v}");
            }
        },
        false,
    );
    let last_log = Arc::clone(&log);
    let _last = topics.listen("k", move |v: &u32| push(&last_log, ("last", *v)), false);

    let payload = catch_unwind(AssertUnwindSafe(|| topics.next("k", 1)))
        .expect_err("the listener's panic resurfaces from next");
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert_eq!(message, "listener failed on 1");
    assert_eq!(seen(&log), [("first", 1), ("last", 1)]);

    // Nothing is poisoned: the key keeps working.
    topics.next("k", 2);
    assert_eq!(
        seen(&log),
        [("first", 1), ("last", 1), ("first", 2), ("last", 2)]
    );
    assert_eq!(topics.last(&"k").as_deref(), Some(&2));
    assert_eq!(topics.len(), 1);
}

#[test]
fn panicking_immediate_listener_resurfaces_from_listen_and_releases_the_key() {
    let topics = PubSub::<&'static str, u32>::builder()
        .initial_value(|_| Some(0))
        .build();
    let payload = catch_unwind(AssertUnwindSafe(|| {
        let _subscription = topics.listen("k", |_: &u32| panic!("immediate"), true);
    }))
    .expect_err("the immediate listener's panic resurfaces from listen");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"immediate"));
    assert!(!topics.is_allocated("k"));
    assert!(topics.is_empty());
}

#[test]
fn panic_in_an_emitting_update_still_marks_the_topic_as_emitted() {
    let topics = PubSub::<&'static str, u32>::builder()
        .should_cleanup(|_, _| false)
        .build();
    let topic = topics.subject("k");
    let subscription = topic.listen(|_: &u32| panic!("boom"), false);
    let result = catch_unwind(AssertUnwindSafe(|| topic.update(|_| Some(1))));
    assert!(result.is_err());
    drop(subscription);
    drop(topic);
    assert!(
        topics.is_allocated("k"),
        "the value was emitted, so the predicate keeps it"
    );
    assert_eq!(topics.last(&"k").as_deref(), Some(&1));
}
