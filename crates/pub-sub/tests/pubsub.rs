//! The `PubSub` contract, key by key: initial values, listeners, allocation and cleanup.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use keyrunner_pub_sub::PubSub;

mod common;
use common::{recorder, seen};

#[test]
fn immediate_listener_gets_the_initial_value_first() {
    let topics = PubSub::<&str, u32>::builder()
        .initial_value(|key| Some(key.len() as u32))
        .build();
    let (log, listener) = recorder();
    let _subscription = topics.listen("four", listener, true);
    topics.next("four", 10);
    assert_eq!(seen(&log), [4, 10]);
}

#[test]
fn listener_without_immediate_gets_only_new_values() {
    let topics = PubSub::<&str, u32>::builder()
        .initial_value(|_| Some(1))
        .build();
    let (log, listener) = recorder();
    let _subscription = topics.listen("k", listener, false);
    assert_eq!(seen(&log), Vec::<u32>::new());
    topics.next("k", 2);
    assert_eq!(seen(&log), [2]);
}

#[test]
fn immediate_listener_without_any_value_is_not_called() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let (log, listener) = recorder();
    let _subscription = topics.listen("k", listener, true);
    assert_eq!(seen(&log), Vec::<u32>::new());
}

#[test]
fn immediate_listener_gets_the_last_emitted_value() {
    let topics = PubSub::<&str, u32>::builder()
        .initial_value(|_| Some(0))
        .build();
    let _holder = topics.subject("k");
    topics.next("k", 5);
    let (log, listener) = recorder();
    let _subscription = topics.listen("k", listener, true);
    assert_eq!(seen(&log), [5]);
}

#[test]
fn keys_are_independent() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let (a, listen_a) = recorder();
    let (b, listen_b) = recorder();
    let _sa = topics.listen("a", listen_a, false);
    let _sb = topics.listen("b", listen_b, false);
    topics.next("a", 1);
    topics.next("b", 2);
    topics.next("a", 3);
    assert_eq!(seen(&a), [1, 3]);
    assert_eq!(seen(&b), [2]);
    assert_eq!(topics.last(&"a").as_deref(), Some(&3));
    assert_eq!(topics.last(&"b").as_deref(), Some(&2));
    assert_eq!(topics.len(), 2);
}

#[test]
fn every_listener_of_a_key_gets_every_value_in_registration_order() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let subscriptions: Vec<_> = (0..3)
        .map(|id| {
            let order = Arc::clone(&order);
            topics.listen(
                "k",
                move |v: &u32| {
                    order
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((id, *v))
                },
                false,
            )
        })
        .collect();
    topics.next("k", 7);
    topics.next("k", 8);
    assert_eq!(
        seen(&order),
        [(0, 7), (1, 7), (2, 7), (0, 8), (1, 8), (2, 8)]
    );
    drop(subscriptions);
}

#[test]
fn unsubscribing_one_of_two_keeps_the_key_and_the_second_frees_it() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let (first_log, first) = recorder();
    let (second_log, second) = recorder();
    let first = topics.listen("k", first, false);
    let second = topics.listen("k", second, false);

    first.unsubscribe();
    assert!(topics.is_allocated("k"));
    topics.next("k", 1);
    assert_eq!(seen(&first_log), Vec::<u32>::new());
    assert_eq!(seen(&second_log), [1]);

    second.unsubscribe();
    assert!(!topics.is_allocated("k"));
    assert_eq!(topics.len(), 0);
    assert!(topics.is_empty());
}

#[test]
fn unsubscribing_never_frees_another_holders_key() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let holder = topics.subject("k");
    for _ in 0..3 {
        topics.listen("k", |_: &u32| {}, false).unsubscribe();
        drop(topics.listen("k", |_: &u32| {}, false));
        assert!(topics.is_allocated("k"));
    }
    holder.next(1);
    assert_eq!(topics.last(&"k").as_deref(), Some(&1));
    drop(holder);
    assert!(topics.is_empty());
}

#[test]
fn key_is_freed_when_all_listeners_leave() {
    let topics: PubSub<String, u32> = PubSub::new();
    let subscriptions: Vec<_> = (0..4)
        .map(|_| topics.listen("k".to_owned(), |_: &u32| {}, true))
        .collect();
    topics.next("k".to_owned(), 1);
    assert!(topics.is_allocated("k"));
    assert_eq!(topics.len(), 1);
    drop(subscriptions);
    assert!(!topics.is_allocated("k"));
    assert_eq!(topics.len(), 0);
    // The last value went with the key.
    assert_eq!(topics.last(&"k".to_owned()), None);
}

#[test]
fn keep_predicate_holds_a_key_until_it_flips() {
    let keep = Arc::new(AtomicBool::new(true));
    let keep_in_predicate = Arc::clone(&keep);
    let topics = PubSub::<&str, u32>::builder()
        .should_cleanup(move |_, last| !keep_in_predicate.load(Ordering::SeqCst) || *last == 0)
        .build();

    // Kept with no listener, value included.
    drop(topics.listen("k", |_: &u32| {}, false));
    assert!(
        !topics.is_allocated("k"),
        "a topic that never emitted is freed"
    );
    topics.next("k", 3);
    assert!(topics.is_allocated("k"));
    assert_eq!(topics.last(&"k").as_deref(), Some(&3));
    assert_eq!(topics.sweep(), 0);

    // A `next` that makes the predicate say "clean up" frees it at the release.
    topics.next("k", 0);
    assert!(!topics.is_allocated("k"));

    // Kept again, then freed by `sweep` once the predicate flips.
    topics.next("k", 4);
    assert!(topics.is_allocated("k"));
    keep.store(false, Ordering::SeqCst);
    assert!(
        topics.is_allocated("k"),
        "nothing re-asks the predicate by itself"
    );
    assert_eq!(topics.sweep(), 1);
    assert!(topics.is_empty());

    // Kept again, then freed by the next release once the predicate flips.
    keep.store(true, Ordering::SeqCst);
    topics.next("k", 5);
    assert!(topics.is_allocated("k"));
    keep.store(false, Ordering::SeqCst);
    drop(topics.listen("k", |_: &u32| {}, false));
    assert!(topics.is_empty());
}

#[test]
fn kept_key_keeps_its_subject_for_new_listeners() {
    let topics = PubSub::<&str, u32>::builder()
        .should_cleanup(|_, _| false)
        .build();
    topics.next("k", 9);
    let (log, listener) = recorder();
    let _subscription = topics.listen("k", listener, true);
    assert_eq!(seen(&log), [9]);
}

#[test]
fn predicate_receives_key_and_last_value_and_skips_topics_that_never_emitted() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let calls_in_predicate = Arc::clone(&calls);
    let topics = PubSub::<&str, u32>::builder()
        .initial_value(|_| Some(100))
        .should_cleanup(move |key, last| {
            calls_in_predicate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((*key, *last));
            true
        })
        .build();

    // Never emitted (only the initial value): freed without asking.
    drop(topics.listen("quiet", |_: &u32| {}, true));
    drop(topics.subject("quiet"));
    assert!(!topics.is_allocated("quiet"));
    assert_eq!(seen(&calls), Vec::<(&str, u32)>::new());

    // Emitted: asked with the key and the last value at the release.
    let topic = topics.subject("loud");
    topic.next(1);
    topic.next(2);
    assert_eq!(
        seen(&calls),
        Vec::<(&str, u32)>::new(),
        "not asked while held"
    );
    drop(topic);
    assert_eq!(seen(&calls), [("loud", 2)]);
    assert!(topics.is_empty());
}

#[test]
fn emitting_update_counts_as_an_emission_and_a_refused_one_does_not() {
    let topics = PubSub::<&str, u32>::builder()
        .initial_value(|_| Some(0))
        .should_cleanup(|_, _| false)
        .build();
    let topic = topics.subject("k");
    assert!(!topic.update(|_| None));
    drop(topic);
    assert!(!topics.is_allocated("k"), "a refused update is no emission");

    let topic = topics.subject("k");
    assert!(topic.update(|last| last.map(|v| v + 1)));
    assert_eq!(topic.last().as_deref(), Some(&1));
    drop(topic);
    assert!(
        topics.is_allocated("k"),
        "an emitting update is an emission"
    );
}

#[test]
fn next_to_an_unwatched_key_is_dropped_unless_the_predicate_keeps_it() {
    let topics = PubSub::<&str, u32>::builder()
        .should_cleanup(|_, last| *last < 10)
        .build();
    topics.next("small", 1);
    assert!(!topics.is_allocated("small"));
    assert_eq!(topics.last(&"small"), None);
    topics.next("big", 10);
    assert!(topics.is_allocated("big"));
    assert_eq!(topics.last(&"big").as_deref(), Some(&10));

    let plain: PubSub<&str, u32> = PubSub::new();
    plain.next("k", 1);
    assert!(plain.is_empty());
}

#[test]
fn last_of_allocated_and_unallocated_keys() {
    let topics = PubSub::<String, String>::builder()
        .initial_value(|key| (key != "none").then(|| format!("initial {key}")))
        .build();
    assert_eq!(
        topics.last(&"a".to_owned()).as_deref().map(String::as_str),
        Some("initial a")
    );
    assert_eq!(topics.last(&"none".to_owned()), None);
    assert!(topics.is_empty(), "reading does not allocate");

    let topic = topics.subject("a".to_owned());
    assert_eq!(
        topic.last().as_deref().map(String::as_str),
        Some("initial a")
    );
    topic.next("changed".to_owned());
    assert_eq!(
        topics.last(&"a".to_owned()).as_deref().map(String::as_str),
        Some("changed")
    );
    assert!(
        topics.is_allocated("a"),
        "reading does not release someone else's lease"
    );
}

#[test]
fn subject_handle_emits_and_listens_on_its_key() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let topic = topics.subject("k");
    assert_eq!(*topic.key(), "k");
    assert!(topics.is_allocated("k"));

    let (log, listener) = recorder();
    let subscription = topic.listen(listener, false);
    assert_eq!(topic.listener_count(), 1);
    topic.next(1);
    topics.next("k", 2);
    assert_eq!(seen(&log), [1, 2]);

    let clone = topic.clone();
    drop(topic);
    drop(subscription);
    assert_eq!(clone.listener_count(), 0);
    assert!(topics.is_allocated("k"), "a clone is another lease");
    drop(clone);
    assert!(!topics.is_allocated("k"));
}

#[test]
fn topic_if_allocated_never_allocates() {
    let topics: PubSub<String, u32> = PubSub::new();
    assert!(topics.topic_if_allocated("k").is_none());
    assert!(topics.is_empty());

    let holder = topics.subject("k".to_owned());
    let found = topics
        .topic_if_allocated("k")
        .map(|topic| topic.key().clone());
    assert_eq!(found.as_deref(), Some("k"));
    holder.next(4);
    let last = topics
        .topic_if_allocated("k")
        .and_then(|topic| topic.last());
    assert_eq!(last.as_deref(), Some(&4));
    drop(holder);
    assert!(topics.is_empty());
}

#[test]
fn entries_lists_every_allocated_key_with_its_last_value() {
    let topics = PubSub::<u32, u32>::builder()
        .initial_value(|key| (*key == 2).then_some(20))
        .build();
    let holders: Vec<_> = (1..=3).map(|key| topics.subject(key)).collect();
    holders[2].next(30);
    let mut entries: Vec<_> = topics
        .entries()
        .into_iter()
        .map(|(key, last)| (key, last.as_deref().copied()))
        .collect();
    entries.sort_unstable();
    assert_eq!(entries, [(1, None), (2, Some(20)), (3, Some(30))]);
    drop(holders);
    assert!(topics.entries().is_empty());
}

#[test]
fn clones_share_one_registry() {
    let topics: PubSub<&str, u32> = PubSub::default();
    let clone = topics.clone();
    let (log, listener) = recorder();
    let subscription = clone.listen("k", listener, false);
    topics.next("k", 1);
    assert_eq!(seen(&log), [1]);
    assert!(topics.is_allocated("k"));
    drop(subscription);
    assert!(topics.is_empty() && clone.is_empty());
}

#[test]
fn custom_hasher_works() {
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>, BuildHasherDefault<DefaultHasher>);
    impl BuildHasher for Counting {
        type Hasher = DefaultHasher;
        fn build_hasher(&self) -> DefaultHasher {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.build_hasher()
        }
    }
    let hashes = Arc::new(AtomicUsize::new(0));
    let topics = PubSub::<u32, u32>::builder()
        .hasher(Counting(Arc::clone(&hashes), BuildHasherDefault::default()))
        .build();
    let (log, listener) = recorder();
    let _subscription = topics.listen(1, listener, false);
    topics.next(1, 5);
    assert_eq!(seen(&log), [5]);
    assert!(
        hashes.load(Ordering::SeqCst) > 0,
        "the custom hasher was used"
    );
}

#[test]
fn shrink_to_fit_after_many_keys() {
    let topics: PubSub<u32, u32> = PubSub::new();
    let holders: Vec<_> = (0..1000).map(|key| topics.subject(key)).collect();
    assert_eq!(topics.len(), 1000);
    drop(holders);
    topics.shrink_to_fit();
    assert!(topics.is_empty());
    let keys: HashSet<u32> = topics.entries().into_iter().map(|(key, _)| key).collect();
    assert!(keys.is_empty());
}

#[test]
fn debug_needs_no_debug_key_or_value_and_never_blocks() {
    struct Opaque;
    let topics: PubSub<u32, Opaque> = PubSub::new();
    let _topic = topics.subject(1);
    let printed = format!("{topics:?}");
    assert!(printed.starts_with("PubSub"), "{printed}");
    assert!(printed.contains("len: 1"), "{printed}");
    assert!(format!("{:?}", PubSub::<u32, Opaque>::builder()).starts_with("Builder"));

    // From inside the cleanup predicate, which runs without the registry's lock, Debug (like
    // every other call) works, and the key being judged is still allocated. (Debug while the
    // lock is held prints `<locked>`: the registry's own tests show it.)
    let slot: Arc<Mutex<Option<PubSub<u32, u32>>>> = Arc::new(Mutex::new(None));
    let printed = Arc::new(Mutex::new(String::new()));
    let (slot_in, printed_in) = (Arc::clone(&slot), Arc::clone(&printed));
    let topics = PubSub::<u32, u32>::builder()
        .should_cleanup(move |_, _| {
            if let Some(topics) = &*slot_in.lock().unwrap_or_else(PoisonError::into_inner) {
                *printed_in.lock().unwrap_or_else(PoisonError::into_inner) = format!("{topics:?}");
            }
            true
        })
        .build();
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(topics.clone());
    let topic = topics.subject(1);
    topic.next(1);
    drop(topic);
    let printed = printed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(printed.contains("len: 1"), "{printed}");
    assert!(topics.is_empty());
    // Break the cycle the predicate holds.
    slot.lock().unwrap_or_else(PoisonError::into_inner).take();
}

#[test]
fn handles_print_their_key() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let topic = topics.subject("k");
    let subscription = topic.listen(|_| {}, false);
    let stream = topic.stream();
    assert!(format!("{topic:?}").contains("\"k\""));
    assert!(format!("{subscription:?}").contains("\"k\""));
    assert!(format!("{stream:?}").contains("\"k\""));
    assert_eq!(*subscription.key(), "k");
    assert_eq!(*stream.key(), "k");
}
