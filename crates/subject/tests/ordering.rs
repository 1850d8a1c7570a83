//! Ordering and reentrancy under real races: one total order, breadth-first reentrancy,
//! snapshots at emission start, final removal, replay without duplicates.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;

use keyrunner_subject::{Subject, Subscription};

mod common;
use common::{Log, within_deadline};

#[test]
fn concurrent_nexts_are_seen_in_one_total_order() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    for _ in 0..20 {
        let subject = Subject::new();
        let logs: Vec<Log<(usize, usize)>> = (0..3).map(|_| Log::default()).collect();
        let _subscriptions: Vec<Subscription> = logs
            .iter()
            .map(|log| subject.listen(log.listener(), false))
            .collect();
        let barrier = Barrier::new(THREADS);
        thread::scope(|scope| {
            for thread in 0..THREADS {
                let (subject, barrier) = (&subject, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for seq in 0..PER_THREAD {
                        subject.next((thread, seq));
                    }
                });
            }
        });
        let first = logs[0].take();
        assert_eq!(first.len(), THREADS * PER_THREAD);
        for log in &logs[1..] {
            assert_eq!(log.take(), first, "listeners disagree on the order");
        }
        for thread in 0..THREADS {
            let own: Vec<usize> = first
                .iter()
                .filter(|(from, _)| *from == thread)
                .map(|(_, seq)| *seq)
                .collect();
            assert_eq!(own, (0..PER_THREAD).collect::<Vec<_>>(), "thread {thread}");
        }
    }
}

#[test]
fn reentrant_next_is_breadth_first() {
    let subject = Subject::new();
    let log = Log::<(char, u32)>::default();
    let (sink, inner) = (log.clone(), subject.clone());
    let _a = subject.listen(
        move |value: &u32| {
            sink.push(('a', *value));
            if *value < 3 {
                inner.next(value + 1);
            }
        },
        false,
    );
    let sink = log.clone();
    let _b = subject.listen(move |value: &u32| sink.push(('b', *value)), false);
    subject.next(1);
    assert_eq!(
        log.take(),
        [('a', 1), ('b', 1), ('a', 2), ('b', 2), ('a', 3), ('b', 3)]
    );
}

#[test]
fn reentrant_and_concurrent_nexts_share_one_order() {
    const THREADS: u64 = 3;
    const PER_THREAD: u64 = 300;
    for _ in 0..10 {
        let subject = Subject::new();
        let logs: Vec<Log<i64>> = (0..3).map(|_| Log::default()).collect();
        // The first listener echoes every positive value as its negation, from inside delivery.
        let (sink, inner) = (logs[0].clone(), subject.clone());
        let _echo = subject.listen(
            move |value: &i64| {
                sink.push(*value);
                if *value > 0 {
                    inner.next(-value);
                }
            },
            false,
        );
        let _others: Vec<Subscription> = logs[1..]
            .iter()
            .map(|log| subject.listen(log.listener(), false))
            .collect();
        let barrier = Barrier::new(THREADS as usize);
        thread::scope(|scope| {
            for thread in 0..THREADS {
                let (subject, barrier) = (&subject, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for seq in 0..PER_THREAD {
                        subject.next((thread * PER_THREAD + seq + 1) as i64);
                    }
                });
            }
        });
        let first = logs[0].take();
        assert_eq!(first.len() as u64, 2 * THREADS * PER_THREAD);
        for log in &logs[1..] {
            assert_eq!(log.take(), first);
        }
        for (index, value) in first.iter().enumerate() {
            if *value < 0 {
                let trigger = first.iter().position(|other| *other == -value);
                assert!(
                    trigger.is_some_and(|at| at < index),
                    "{value} before its trigger"
                );
            }
        }
    }
}

#[test]
fn a_listener_may_call_back_into_its_subject() {
    within_deadline("a listener calling back into its subject", || {
        let subject = Subject::with_value(0_u32);
        let held = Arc::new(Mutex::new(Vec::<Subscription>::new()));
        let observed = Log::<String>::default();
        let (inner, slot, log) = (subject.clone(), Arc::clone(&held), observed.clone());
        let _subscription = subject.listen(
            move |value: &u32| {
                if *value != 1 {
                    return;
                }
                log.push(format!("last {:?}", inner.last().as_deref()));
                log.push(format!("count {}", inner.listener_count()));
                let sink = log.clone();
                let added = inner.listen(move |value| sink.push(format!("added {value}")), true);
                slot.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(added);
                let removed = inner.listen(|_| {}, false);
                removed.unsubscribe();
                log.push(format!(
                    "updated {}",
                    inner.update(|last| last.map(|v| v + 1))
                ));
                let _stream = inner.stream();
                inner.next(10);
            },
            false,
        );
        subject.next(1);
        assert_eq!(
            observed.take(),
            [
                "last Some(1)",
                "count 1",
                "added 1",
                "updated true",
                "added 2",
                "added 10"
            ]
        );
        assert_eq!(subject.last().as_deref(), Some(&10));
    });
}

#[test]
fn a_listener_added_during_an_emission_misses_that_value() {
    let subject = Subject::new();
    let late = Log::<u32>::default();
    let late_immediate = Log::<u32>::default();
    let held = Arc::new(Mutex::new(Vec::<Subscription>::new()));
    let (inner, slot) = (subject.clone(), Arc::clone(&held));
    let (plain, replayed) = (late.clone(), late_immediate.clone());
    let _adder = subject.listen(
        move |value: &u32| {
            if *value == 1 {
                let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
                slot.push(inner.listen(plain.listener(), false));
                slot.push(inner.listen(replayed.listener(), true));
            }
        },
        false,
    );
    subject.next(1);
    subject.next(2);
    assert_eq!(late.take(), [2]);
    assert_eq!(late_immediate.take(), [1, 2]);
}

#[test]
fn a_listener_removed_during_an_emission_is_not_called() {
    let subject = Subject::new();
    let log = Log::<u32>::default();
    let victim_slot = Arc::new(Mutex::new(None::<Subscription>));
    let slot = Arc::clone(&victim_slot);
    let _remover = subject.listen(
        move |_: &u32| drop(slot.lock().unwrap_or_else(PoisonError::into_inner).take()),
        false,
    );
    let victim = subject.listen(log.listener(), false);
    *victim_slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(victim);
    subject.next(1);
    subject.next(2);
    assert!(log.take().is_empty());
}

#[test]
fn no_call_after_a_cross_thread_unsubscribe_returns() {
    for _ in 0..300 {
        let subject = Subject::new();
        let removed = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let late_calls = Arc::new(AtomicUsize::new(0));
        let _before = subject.listen(|_: &usize| {}, false);
        let (flag, counter, late) = (
            Arc::clone(&removed),
            Arc::clone(&calls),
            Arc::clone(&late_calls),
        );
        let subscription = subject.listen(
            move |_: &usize| {
                // Some work, so removal often lands mid-call.
                for _ in 0..50 {
                    std::hint::spin_loop();
                }
                if flag.load(Ordering::SeqCst) {
                    late.fetch_add(1, Ordering::SeqCst);
                }
                counter.fetch_add(1, Ordering::SeqCst);
            },
            false,
        );
        let emitted = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(3);
        thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    barrier.wait();
                    while !stop.load(Ordering::SeqCst) {
                        subject.next(emitted.fetch_add(1, Ordering::SeqCst));
                    }
                });
            }
            barrier.wait();
            while emitted.load(Ordering::SeqCst) < 20 {
                std::hint::spin_loop();
            }
            subscription.unsubscribe();
            removed.store(true, Ordering::SeqCst);
            let after = calls.load(Ordering::SeqCst);
            let target = emitted.load(Ordering::SeqCst) + 100;
            while emitted.load(Ordering::SeqCst) < target {
                std::hint::spin_loop();
            }
            stop.store(true, Ordering::SeqCst);
            assert_eq!(calls.load(Ordering::SeqCst), after, "called after removal");
        });
        assert_eq!(late_calls.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn immediate_listen_racing_emissions_sees_a_contiguous_increasing_run() {
    const VALUES: u64 = 2_000;
    for _ in 0..50 {
        let subject = Subject::with_value(0_u64);
        let _busy = subject.listen(|_| std::hint::spin_loop(), false);
        let logs: Vec<Log<u64>> = (0..3).map(|_| Log::default()).collect();
        let barrier = Barrier::new(1 + logs.len());
        let subscriptions = thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                for value in 1..VALUES {
                    subject.next(value);
                }
            });
            let late: Vec<_> = logs
                .iter()
                .map(|log| {
                    let (subject, barrier) = (&subject, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        subject.listen(log.listener(), true)
                    })
                })
                .collect();
            late.into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p))
                })
                .collect::<Vec<Subscription>>()
        });
        for log in &logs {
            let seen = log.take();
            let first = *seen
                .first()
                .expect("immediate always has a value to replay");
            let expected: Vec<u64> = (first..VALUES).collect();
            assert_eq!(seen, expected, "duplicate, gap or reordering");
        }
        drop(subscriptions);
    }
}
