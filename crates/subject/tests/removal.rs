//! Removing a listener never closes a wait cycle: a removal made inside a listener (of any
//! subject) or inside a layer's callback returns at once, and the removed listener gets no value
//! whose delivery starts afterwards. (A removal made anywhere else waits for the value in flight:
//! `no_call_after_unsubscribe_returns` in `loom.rs` proves it, `ordering.rs` races it.)
//!
//! The liveness claims run under a watchdog ([`common::within_deadline`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;

use keyrunner_subject::raw::callback_scope;
use keyrunner_subject::{Subject, Subscription};

mod common;
use common::within_deadline;

type Slot = Arc<Mutex<Option<Subscription>>>;

fn take(slot: &Slot) -> Option<Subscription> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A listener that counts its calls, in a slot another listener can empty.
fn victim(subject: &Subject<u32>, calls: &Arc<AtomicUsize>) -> Slot {
    let calls = Arc::clone(calls);
    Arc::new(Mutex::new(Some(subject.listen(
        move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
        },
        false,
    ))))
}

#[test]
fn listeners_of_two_subjects_removing_each_others_listeners_do_not_deadlock() {
    within_deadline("cross removals during two deliveries", || {
        let (a, b) = (Subject::<u32>::new(), Subject::<u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let (victim_a, victim_b) = (victim(&a, &calls), victim(&b, &calls));
        // Both deliveries are in flight at once before either removes anything.
        let both_in_flight = Arc::new(Barrier::new(2));
        let remover = |victim: &Slot| {
            let (victim, both_in_flight) = (Arc::clone(victim), Arc::clone(&both_in_flight));
            move |value: &u32| {
                if *value == 1 {
                    both_in_flight.wait();
                    drop(take(&victim));
                }
            }
        };
        // Registered before the victims' deliveries, so they run first.
        let _on_a = a.listen(remover(&victim_b), false);
        let _on_b = b.listen(remover(&victim_a), false);

        let other = b.clone();
        let thread_b = thread::spawn(move || other.next(1));
        a.next(1);
        thread_b.join().expect("no panic");

        let before = calls.load(Ordering::SeqCst);
        a.next(2);
        b.next(2);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "a removed listener was called"
        );
    });
}

#[test]
fn a_removal_inside_a_callback_scope_does_not_wait_for_a_delivery_on_another_thread() {
    within_deadline("removal from a callback scope", || {
        let subject = Subject::<u32>::new();
        let (entered, in_listener) = mpsc::channel();
        let (release, go) = mpsc::channel::<()>();
        let go = Mutex::new(go);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let subscription = subject.listen(
            move |value: &u32| {
                counter.fetch_add(1, Ordering::SeqCst);
                if *value == 1 {
                    let _ = entered.send(());
                    // Held until the removal below has returned.
                    let _ = go.lock().unwrap_or_else(PoisonError::into_inner).recv();
                }
            },
            false,
        );
        let publisher = {
            let subject = subject.clone();
            thread::spawn(move || subject.next(1))
        };
        in_listener.recv().expect("the listener runs");
        // Waiting for the delivery here would deadlock: the listener waits for this thread.
        callback_scope(|| subscription.unsubscribe());
        release.send(()).expect("the listener waits for this");
        publisher.join().expect("no panic");
        subject.next(2);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no value after the removal"
        );
    });
}
