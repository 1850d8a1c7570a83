//! Races on one key, run from real threads: linearizable `run`, exact `stop`, one outcome.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use common::{Manual, on_state};
use futures::executor::LocalPool;
use futures::stream;
use keyrunner_task_runner_repository::{Outcome, RunError, State, StateNode, spawn_fn};

type Repo = keyrunner_task_runner_repository::TaskRunnerRepository<u32, u32>;

const ROUNDS: u32 = 2_000;

#[test]
fn of_two_racing_runs_exactly_one_wins_and_the_loser_gets_its_task_back() {
    let manual = Manual::default();
    let repo: Repo = manual.repository();
    let barrier = Barrier::new(2);
    let wins = AtomicUsize::new(0);
    let busy = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for key in 0..ROUNDS {
                    barrier.wait();
                    let marker = key;
                    match repo.run(key, move |_| stream::iter([marker])) {
                        Ok(handle) => {
                            wins.fetch_add(1, Ordering::SeqCst);
                            handle.detach();
                        }
                        Err(RunError::Busy { task, running }) => {
                            busy.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(repo.state(&key).run_id(), Some(running));
                            let _unused_task = task;
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
            });
        }
    });
    assert_eq!(wins.load(Ordering::SeqCst), ROUNDS as usize);
    assert_eq!(busy.load(Ordering::SeqCst), ROUNDS as usize);
    assert_eq!(manual.queued(), ROUNDS as usize, "one driver per key");
    let mut pool = LocalPool::new();
    manual.drive(&mut pool);
    assert!(repo.is_empty(), "every key forgotten after completion");
}

#[test]
fn stop_racing_stop_fires_the_signal_once_and_one_of_them_wins() {
    let manual = Manual::default();
    let repo: Repo = manual.repository();
    let barrier = Barrier::new(2);
    for key in 0..ROUNDS {
        let handle = repo.run(key, |_| stream::pending::<u32>()).unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fired);
        handle
            .abort_signal()
            .on_abort(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .detach();
        let nodes: Vec<_> = (0..2)
            .map(|_| match repo.state_node(key) {
                StateNode::Running(node) => node,
                StateNode::Idle(_) => panic!("running"),
            })
            .collect();
        let won = AtomicUsize::new(0);
        thread::scope(|scope| {
            for node in nodes {
                scope.spawn(|| {
                    barrier.wait();
                    if node.stop(None).is_ok() {
                        won.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(won.load(Ordering::SeqCst), 1);
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert!(repo.state(&key).is_idle());
    }
    let mut pool = LocalPool::new();
    manual.drive(&mut pool);
    assert!(repo.is_empty());
}

#[test]
fn stop_racing_natural_completion_yields_one_outcome_agreed_by_all() {
    // The driver runs on one thread while another stops the run: whichever transition wins,
    // handle, state and listener agree, and the signal fired iff the stop won.
    let queue: Arc<Mutex<Vec<keyrunner_task_runner_repository::Driver>>> = Arc::default();
    let sink = Arc::clone(&queue);
    let repo: Repo = Repo::new(spawn_fn(move |future| sink.lock().unwrap().push(future)));
    let barrier = Barrier::new(2);
    let (mut stopped, mut completed) = (0, 0);
    for key in 0..ROUNDS {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let _subscription = repo.listen(
            key,
            on_state(move |state: &State<u32>| sink.lock().unwrap().push(state.clone())),
            false,
        );
        let handle = repo.run(key, |_| stream::iter([1])).unwrap();
        let driver = queue.lock().unwrap().pop().unwrap();
        let StateNode::Running(node) = repo.state_node(key) else {
            panic!("running");
        };
        let stop_won = thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                futures::executor::block_on(driver);
            });
            let stopper = scope.spawn(|| {
                barrier.wait();
                node.stop(None).is_ok()
            });
            stopper.join().unwrap()
        });
        let outcome = handle.outcome().expect("the driver finished");
        let last = seen.lock().unwrap().last().cloned().unwrap();
        assert!(last.is_idle());
        assert_eq!(last.last_outcome(), Some(&outcome));
        assert_eq!(handle.abort_signal().is_aborted(), stop_won);
        match outcome {
            Outcome::Stopped { .. } => {
                assert!(stop_won);
                stopped += 1;
            }
            Outcome::Completed => {
                assert!(!stop_won);
                completed += 1;
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        let idles = seen.lock().unwrap().iter().filter(|s| s.is_idle()).count();
        assert_eq!(idles, 1, "exactly one end transition");
    }
    assert_eq!(stopped + completed, ROUNDS);
}

#[test]
fn replace_racing_replace_leaves_exactly_one_run() {
    use keyrunner_task_runner_repository::Conflict;
    let manual = Manual::default();
    let repo: Repo = manual.repository();
    let barrier = Barrier::new(2);
    for key in 0..ROUNDS / 4 {
        repo.run(key, |_| stream::pending::<u32>())
            .unwrap()
            .detach();
        let handles: Vec<_> = thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        repo.run_with(key, Conflict::Replace, |_| stream::pending::<u32>())
                            .unwrap()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let running = repo.state(&key).run_id().unwrap();
        let survivors = handles
            .iter()
            .filter(|handle| handle.run_id() == running)
            .count();
        assert_eq!(survivors, 1);
    }
    let shutdown = repo.shutdown(None);
    let mut pool = LocalPool::new();
    manual.drive(&mut pool);
    futures::executor::block_on(shutdown);
    assert!(repo.is_empty());
}
