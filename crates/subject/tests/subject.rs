//! Single-threaded behaviour: listen, next, unsubscribe, last value, immediate replay.

use std::sync::{Arc, Mutex, PoisonError};

mod common;
use common::Log;
use keyrunner_subject::{Subject, Subscription};

/// A shared log that listeners push into.

#[test]
fn listener_receives_values_until_unsubscribed() {
    let subject = Subject::new();
    let log = Log::<u32>::default();
    let subscription = subject.listen(log.listener(), false);
    subject.next(1);
    subject.next(2);
    assert_eq!(log.take(), [1, 2]);
    subscription.unsubscribe();
    subject.next(3);
    assert_eq!(log.take(), Vec::<u32>::new());
    assert_eq!(subject.listener_count(), 0);
}

#[test]
fn dropping_the_subscription_unsubscribes() {
    let subject = Subject::new();
    let log = Log::<u32>::default();
    let subscription = subject.listen(log.listener(), false);
    assert_eq!(subject.listener_count(), 1);
    drop(subscription);
    assert_eq!(subject.listener_count(), 0);
    subject.next(1);
    assert!(log.take().is_empty());
}

#[test]
fn last_value_reads() {
    let subject = Subject::new();
    assert_eq!(subject.last(), None);
    subject.next("a");
    assert_eq!(subject.last().as_deref(), Some(&"a"));
    subject.next("b");
    assert_eq!(subject.last().as_deref(), Some(&"b"));
    assert_eq!(Subject::with_value(4).last().as_deref(), Some(&4));
    assert_eq!(Subject::<u8>::default().last(), None);
}

#[test]
fn immediate_replays_the_last_value() {
    let subject = Subject::new();
    subject.next(1);
    subject.next(2);
    let log = Log::<u32>::default();
    let _subscription = subject.listen(log.listener(), true);
    assert_eq!(log.take(), [2]);
    subject.next(3);
    assert_eq!(log.take(), [3]);
}

#[test]
fn immediate_replays_the_initial_value() {
    let subject = Subject::with_value(9);
    let log = Log::<u32>::default();
    let _subscription = subject.listen(log.listener(), true);
    assert_eq!(log.take(), [9]);
}

#[test]
fn immediate_without_a_value_calls_nothing() {
    let subject = Subject::new();
    let log = Log::<u32>::default();
    let _subscription = subject.listen(log.listener(), true);
    assert!(log.take().is_empty());
    subject.next(1);
    assert_eq!(log.take(), [1]);
}

#[test]
fn not_immediate_skips_the_last_value() {
    let subject = Subject::with_value(1);
    let log = Log::<u32>::default();
    let _subscription = subject.listen(log.listener(), false);
    assert!(log.take().is_empty());
}

#[test]
fn listeners_are_called_in_registration_order() {
    let subject = Subject::new();
    let log = Log::<(usize, u32)>::default();
    let subscriptions: Vec<Subscription> = (0..5)
        .map(|index| {
            let log = log.clone();
            subject.listen(move |value: &u32| log.push((index, *value)), false)
        })
        .collect();
    subject.next(7);
    assert_eq!(
        log.take(),
        (0..5).map(|index| (index, 7)).collect::<Vec<_>>()
    );
    // Removing one in the middle keeps the others' order.
    let mut subscriptions = subscriptions;
    drop(subscriptions.remove(2));
    subject.next(8);
    assert_eq!(log.take(), [(0, 8), (1, 8), (3, 8), (4, 8)]);
}

#[test]
fn any_listener_can_leave_at_any_count() {
    // Every count from 3 down to 0, removing each position in turn: the survivors, and only
    // they, receive the next value, in registration order.
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let subject = Subject::new();
        let log = Log::<(usize, u32)>::default();
        let mut subscriptions: Vec<Option<Subscription>> = (0..3)
            .map(|index| {
                let log = log.clone();
                Some(subject.listen(move |value: &u32| log.push((index, *value)), false))
            })
            .collect();
        for (round, &leaving) in (0_u32..).zip(&order) {
            drop(subscriptions[leaving].take());
            subject.next(round);
            let expected: Vec<(usize, u32)> = (0..3)
                .filter(|&index| subscriptions[index].is_some())
                .map(|index| (index, round))
                .collect();
            assert_eq!(log.take(), expected, "order {order:?}, round {round}");
            assert_eq!(subject.listener_count(), expected.len());
        }
        // And the subject takes listeners again once empty.
        let again = log.clone();
        let _again = subject.listen(move |value: &u32| again.push((3, *value)), false);
        subject.next(9);
        assert_eq!(log.take(), [(3, 9)]);
    }
}

#[test]
fn unsubscribing_twice_is_harmless() {
    let subject = Subject::new();
    let log = Log::<u32>::default();
    let slot = Arc::new(Mutex::new(None::<Subscription>));
    // The listener unsubscribes itself on its first value; the guard is then taken again.
    let (inner_log, inner_slot) = (log.clone(), Arc::clone(&slot));
    let subscription = subject.listen(
        move |value: &u32| {
            inner_log.push(*value);
            let taken = inner_slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            drop(taken);
        },
        false,
    );
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(subscription);
    let other = subject.listen(log.listener(), false);
    subject.next(1);
    assert_eq!(log.take(), [1, 1]);
    assert!(
        slot.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_none()
    );
    subject.next(2);
    assert_eq!(log.take(), [2]);
    assert_eq!(subject.listener_count(), 1);
    other.unsubscribe();
    assert_eq!(subject.listener_count(), 0);
}

#[test]
fn subscription_outliving_the_subject_is_harmless() {
    let subject = Subject::new();
    let subscription = subject.listen(|_: &u32| {}, false);
    drop(subject);
    subscription.unsubscribe();
}

#[test]
fn dropping_the_last_handle_drops_the_listeners() {
    let subject = Subject::<u32>::new();
    let clone = subject.clone();
    let token = Arc::new(());
    let held = Arc::clone(&token);
    let _subscription = subject.listen(move |_| assert!(Arc::strong_count(&held) > 1), false);
    assert_eq!(Arc::strong_count(&token), 2);
    drop(subject);
    assert_eq!(
        Arc::strong_count(&token),
        2,
        "a clone still holds the subject"
    );
    drop(clone);
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn values_are_delivered_by_reference() {
    /// Not `Clone`: delivery must not need it.
    struct Unique(u32);
    let subject = Subject::new();
    let log = Log::<u32>::default();
    let sink = log.clone();
    let _subscription = subject.listen(move |value: &Unique| sink.push(value.0), false);
    let other = log.clone();
    let _second = subject.listen(move |value: &Unique| other.push(value.0 + 100), false);
    subject.next(Unique(1));
    assert_eq!(log.take(), [1, 101]);
}

#[test]
fn update_is_a_compare_and_set() {
    let subject = Subject::with_value(0);
    let log = Log::<u32>::default();
    let _subscription = subject.listen(log.listener(), false);
    assert!(subject.update(|last| last.map(|value| value + 1)));
    assert!(!subject.update(|last| (last == Some(&0)).then_some(5)));
    assert_eq!(log.take(), [1]);
    assert_eq!(subject.last().as_deref(), Some(&1));

    let empty = Subject::<u32>::new();
    assert!(!empty.update(|last| last.copied()));
    assert!(empty.update(|last| Some(last.map_or(10, |value| *value))));
    assert_eq!(empty.last().as_deref(), Some(&10));
}

#[test]
fn debug_does_not_need_debug_values() {
    struct Opaque;
    let subject = Subject::with_value(Opaque);
    let subscription = subject.listen(|_| {}, false);
    let text = format!("{subject:?}");
    assert!(text.contains("listeners: 1"), "{text}");
    assert!(format!("{subscription:?}").starts_with("Subscription"));
}
