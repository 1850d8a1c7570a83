//! Panicking listeners: contained, not swallowed, resumed from the delivering call.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use keyrunner_subject::Subject;

mod common;
use common::{Log, message};

/// Silences the report of the panics this file expects (their messages start with
/// "expected"); every other panic is reported as usual.
fn quiet() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let report = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !message(info.payload()).starts_with("expected") {
                report(info);
            }
        }));
    });
}

#[test]
fn other_listeners_still_receive_and_the_panic_resurfaces_from_next() {
    quiet();
    let subject = Subject::new();
    let log = Log::default();
    let sink = log.clone();
    let _before = subject.listen(move |value: &u32| sink.push(('a', *value)), false);
    let _bomb = subject.listen(
        |value: &u32| {
            if *value == 1 {
                panic!("expected listener failed on {value}");
            }
        },
        false,
    );
    let sink = log.clone();
    let _after = subject.listen(move |value: &u32| sink.push(('c', *value)), false);

    let payload = panic::catch_unwind(AssertUnwindSafe(|| subject.next(1)))
        .expect_err("the listener's panic must resurface from next");
    assert_eq!(message(&*payload), "expected listener failed on 1");
    assert_eq!(log.take(), [('a', 1), ('c', 1)]);

    // Not poisoned: everything keeps working.
    subject.next(2);
    assert_eq!(log.take(), [('a', 2), ('c', 2)]);
    assert_eq!(subject.last().as_deref(), Some(&2));
    assert_eq!(subject.listener_count(), 3);
    assert!(subject.update(|last| last.map(|value| value + 1)));
    assert_eq!(log.take(), [('a', 3), ('c', 3)]);
}

#[test]
fn only_the_first_panic_of_a_delivery_resurfaces() {
    quiet();
    let subject = Subject::new();
    let _first = subject.listen(|_: &u32| panic!("expected first"), false);
    let _second = subject.listen(|_: &u32| panic!("expected second"), false);
    let payload = panic::catch_unwind(AssertUnwindSafe(|| subject.next(1)))
        .expect_err("a panic must resurface");
    assert_eq!(message(&*payload), "expected first");
}

#[test]
fn a_panic_during_reentrant_delivery_resurfaces_from_the_outer_call() {
    quiet();
    let subject = Subject::new();
    let log = Log::default();
    let (sink, inner) = (log.clone(), subject.clone());
    let _echo = subject.listen(
        move |value: &u32| {
            sink.push(('e', *value));
            if *value == 1 {
                inner.next(2);
            }
        },
        false,
    );
    let _bomb = subject.listen(
        |value: &u32| {
            if *value == 2 {
                panic!("expected second value");
            }
        },
        false,
    );
    let payload = panic::catch_unwind(AssertUnwindSafe(|| subject.next(1)))
        .expect_err("the nested value's panic must resurface from the outer next");
    assert_eq!(message(&*payload), "expected second value");
    assert_eq!(log.take(), [('e', 1), ('e', 2)]);
    subject.next(3);
    assert_eq!(log.take(), [('e', 3)]);
}

#[test]
fn a_panicking_immediate_listener_resurfaces_from_listen_and_is_removed() {
    quiet();
    let subject = Subject::with_value(1_u32);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        subject.listen(|_: &u32| panic!("expected immediate"), true)
    }));
    let payload = result.expect_err("the immediate call's panic must resurface from listen");
    assert_eq!(message(&*payload), "expected immediate");
    assert_eq!(subject.listener_count(), 0);
    subject.next(2);
}

#[test]
fn a_panic_in_update_leaves_the_subject_usable() {
    quiet();
    let subject = Subject::with_value(1_u32);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        subject.update(|_| panic!("expected decision failed"))
    }));
    assert_eq!(
        message(&*result.expect_err("must panic")),
        "expected decision failed"
    );
    assert_eq!(subject.last().as_deref(), Some(&1));
    assert!(subject.update(|last| last.map(|value| value + 1)));
    assert_eq!(subject.last().as_deref(), Some(&2));
}
