//! Adversarial checks: panics in the middle of transitions, shutdown racing runs, stops racing
//! replacements, observers coming and going while a driver delivers, and `Debug` under load.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasher;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::{Alive, Manual, on_state, poll_once};
use futures::executor::{LocalPool, block_on};
use futures::stream::{self, StreamExt};
use keyrunner_task_runner_repository::{
    Conflict, Driver, NoError, Outcome, Reason, RunHandle, RunningNode, State, StateNode,
    TaskRunnerRepository, spawn_fn,
};

type Repo = TaskRunnerRepository<u32, u32>;

const ROUNDS: u32 = 1_000;

fn running(repo: &Repo, key: u32) -> RunningNode<u32, u32> {
    match repo.state_node(key) {
        StateNode::Running(node) => node,
        StateNode::Idle(idle) => panic!("key {key} is idle: {:?}", idle.last_outcome()),
    }
}

fn stopped(reason: &str) -> Outcome<NoError> {
    Outcome::Stopped {
        reason: Some(Reason::from(reason)),
    }
}

/// A spawner that keeps every driver so the test decides when each is polled or dropped.
#[derive(Clone, Default)]
struct Held(Arc<Mutex<Vec<Driver>>>);

impl Held {
    fn repository(&self) -> Repo {
        let queue = Arc::clone(&self.0);
        Repo::new(spawn_fn(move |future| queue.lock().unwrap().push(future)))
    }

    fn take(&self) -> Vec<Driver> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

// ---- Listener panics in the middle of a transition -------------------------------------------

/// `stop` records the idle state, the listener of that transition panics, and the panic
/// resurfaces from `stop` — but the run was stopped, so its signal must still fire and its
/// stream must still be dropped. Otherwise the key says "stopped" while the task runs on
/// forever, its handle never resolves and the live count never drops.
#[test]
fn a_listener_panic_during_stop_still_fires_the_signal_and_drops_the_stream() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let alive = Alive::default();
    let tracked = alive.clone();
    let handle = repo
        .run(1, move |_| tracked.track(stream::pending::<u32>()))
        .unwrap();
    manual.drive(&mut pool);
    assert_eq!(alive.count(), 1);
    let _panicky = repo.listen(
        1,
        on_state(|state: &State<u32>| assert!(!state.is_idle(), "listener sees idle")),
        false,
    );

    let node = running(&repo, 1);
    let result = panic::catch_unwind(AssertUnwindSafe(|| node.stop(Reason::from("user"))));
    assert!(result.is_err(), "the listener's panic resurfaces from stop");
    assert!(repo.state(&1).is_idle(), "the stop took effect");

    assert!(
        handle.abort_signal().is_aborted(),
        "the stopped run's signal never fired"
    );
    manual.drive(&mut pool);
    assert_eq!(alive.count(), 0, "the stopped run's stream is still alive");
    assert_eq!(handle.outcome(), Some(stopped("user")));
    assert_eq!(repo.live_tasks(), 0);
}

/// `run` records the running state, the listener of that transition panics, and the panic
/// resurfaces from `run` before the driver is spawned. The key must not be left "running" a run
/// that has no driver: nobody could ever end it but an explicit stop, `run` on the key is
/// refused forever, and the key (held by its own slot) is never forgotten.
#[test]
fn a_listener_panic_when_a_run_starts_leaves_no_phantom_run() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let panicky = repo.listen(
        1,
        on_state(|state: &State<u32>| {
            assert!(
                !(state.is_running() && state.progress().is_none()),
                "listener sees a start"
            );
        }),
        false,
    );
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        repo.run(1, |_| stream::iter([7])).map(RunHandle::detach)
    }));
    assert!(result.is_err(), "the listener's panic resurfaces from run");
    manual.drive(&mut pool);
    assert!(
        !repo.is_running(&1),
        "key 1 runs a run without a driver: {:?} (live tasks: {})",
        repo.state(&1),
        repo.live_tasks()
    );
    drop(panicky);
    assert!(repo.is_empty(), "key 1 is never forgotten");
}

/// The executor drops a started driver (its runtime shut down); the driver records `Lost`, and
/// a listener of that transition panics inside the driver's destructor. The handle must still
/// resolve and the live count must still drop, or `shutdown` never resolves.
#[test]
fn a_listener_panic_while_the_executor_drops_the_driver_still_resolves_the_handle() {
    let held = Held::default();
    let repo = held.repository();
    let handle = repo.run(1, |_| stream::pending::<u32>()).unwrap();
    let mut drivers = held.take();
    assert!(
        !poll_once(&mut drivers[0]),
        "the driver waits on its stream"
    );
    let _panicky = repo.listen(
        1,
        on_state(|state: &State<u32>| assert!(!state.is_idle(), "listener sees idle")),
        false,
    );

    let dropped = panic::catch_unwind(AssertUnwindSafe(|| drop(drivers)));
    assert!(
        dropped.is_err(),
        "the listener's panic resurfaces from the drop"
    );
    assert_eq!(repo.state(&1).last_outcome(), Some(&Outcome::Lost));
    assert!(handle.is_finished(), "the handle never resolves");
    assert_eq!(handle.outcome(), Some(Outcome::Lost));
    assert_eq!(repo.live_tasks(), 0, "the live count leaked");
    assert!(
        poll_once(&mut Box::pin(repo.shutdown(None))),
        "shutdown waits forever"
    );
}

/// A listener panics on one progress item; the panic surfaces from the executor's poll (as
/// documented) — and the executor drops the driver, so the run ends as `Lost` instead of
/// completing. A listener's bug decides the outcome of a run it only watches.
#[test]
fn a_listener_panic_on_progress_does_not_change_the_outcome() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let _panicky = repo.listen(
        1,
        on_state(|state: &State<u32>| {
            assert_ne!(state.progress(), Some(&1), "listener sees item 1")
        }),
        false,
    );
    let handle = repo.run(1, |_| stream::iter([1, 2, 3])).unwrap();
    let driven = panic::catch_unwind(AssertUnwindSafe(|| manual.drive(&mut pool)));
    assert!(driven.is_err(), "the listener's panic resurfaces");
    drop(pool);
    assert_eq!(
        handle.outcome(),
        Some(Outcome::Completed),
        "the stream had more items and would have completed"
    );
}

/// `shutdown` stops every key; a listener of one key panics on its idle transition. The other
/// keys must still be stopped: a shutdown that stops one key and unwinds leaves the others
/// running, with the shutdown flag set and no `Shutdown` future to wait on.
#[test]
fn shutdown_stops_every_run_even_when_a_listener_panics() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let alive = Alive::default();
    let mut subscriptions = Vec::new();
    let handles: Vec<_> = (0..4)
        .map(|key| {
            subscriptions.push(repo.listen(
                key,
                on_state(|state: &State<u32>| assert!(!state.is_idle(), "listener sees idle")),
                false,
            ));
            let tracked = alive.clone();
            repo.run(key, move |_| tracked.track(stream::pending::<u32>()))
                .unwrap()
        })
        .collect();
    manual.drive(&mut pool);

    let result = panic::catch_unwind(AssertUnwindSafe(|| repo.shutdown(Reason::from("deploy"))));
    assert!(
        result.is_err(),
        "a listener's panic resurfaces from shutdown"
    );
    assert_eq!(repo.running_keys(), Vec::<u32>::new(), "keys left running");
    manual.drive(&mut pool);
    assert_eq!(alive.count(), 0, "streams left alive after shutdown");
    for handle in handles {
        assert_eq!(handle.outcome(), Some(stopped("deploy")));
    }
}

/// Same as above with the panic coming from a task's own abort callback: `stop` fires the
/// signal, the callback panics, and the shutdown loop unwinds past the remaining keys.
#[test]
fn shutdown_stops_every_run_even_when_an_abort_callback_panics() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let handles: Vec<_> = (0..4)
        .map(|key| {
            repo.run(key, |cx| {
                cx.abort_signal()
                    .on_abort(|_| panic!("abort callback"))
                    .detach();
                stream::pending::<u32>()
            })
            .unwrap()
        })
        .collect();
    manual.drive(&mut pool);

    let result = panic::catch_unwind(AssertUnwindSafe(|| repo.shutdown(Reason::from("deploy"))));
    assert!(
        result.is_err(),
        "the callback's panic resurfaces from shutdown"
    );
    assert_eq!(repo.running_keys(), Vec::<u32>::new(), "keys left running");
    manual.drive(&mut pool);
    assert_eq!(repo.live_tasks(), 0);
    for handle in handles {
        assert!(handle.abort_signal().is_aborted());
    }
}

// ---- Races from real threads -----------------------------------------------------------------

/// A stop from a node that saw run A races `run_with(Replace)`, which stops A and starts B.
/// Whoever wins, B is never stopped by the node, A's signal fires once, and the stop succeeds
/// iff A's outcome carries its reason.
#[test]
fn stop_racing_replace_never_stops_the_replacement() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let barrier = Barrier::new(2);
    for key in 0..ROUNDS {
        let first = repo.run(key, |_| stream::pending::<u32>()).unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fired);
        first
            .abort_signal()
            .on_abort(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .detach();
        let node = running(&repo, key);
        let (stop_won, second) = thread::scope(|scope| {
            let stopper = scope.spawn(|| {
                barrier.wait();
                node.stop(Reason::from("user")).is_ok()
            });
            barrier.wait();
            let second = repo
                .run_with(key, Conflict::Replace, |_| stream::pending::<u32>())
                .map_err(|error| error.to_string())
                .unwrap();
            (stopper.join().unwrap(), second)
        });
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert!(
            !second.abort_signal().is_aborted(),
            "the replacement was stopped"
        );
        assert_eq!(repo.state(&key).run_id(), Some(second.run_id()));
        manual.drive(&mut pool);
        let reason = if stop_won { "user" } else { "superseded" };
        assert_eq!(first.outcome(), Some(stopped(reason)));
        running(&repo, key).stop(None).unwrap();
    }
    manual.drive(&mut pool);
    assert_eq!(repo.live_tasks(), 0);
    assert!(repo.is_empty());
}

/// `shutdown` racing `run` on real threads: once the shutdown future is ready, no task stream
/// may appear or stay alive. The window (between `run`'s second look at the shutdown flag and
/// its entry into the live count) is a few instructions wide, so this rarely fails; the loom
/// model `shutdown_racing_run_lets_no_driver_escape` finds it every time.
#[test]
fn shutdown_racing_run_lets_no_driver_escape() {
    let barrier = Barrier::new(2);
    for _ in 0..ROUNDS {
        let held = Held::default();
        let repo = held.repository();
        let (resolved, spawned_then) = thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                let _ = repo
                    .run(0, |_| stream::pending::<u32>())
                    .map(RunHandle::detach);
            });
            barrier.wait();
            let shutdown = repo.shutdown(None);
            let resolved = poll_once(&mut Box::pin(shutdown));
            (resolved, held.0.lock().unwrap().len())
        });
        if resolved {
            assert_eq!(
                held.0.lock().unwrap().len(),
                spawned_then,
                "a driver was spawned after shutdown resolved"
            );
        }
        for mut driver in held.take() {
            assert!(poll_once(&mut driver), "a stopped driver ends at once");
        }
    }
}

/// Observers subscribe and unsubscribe (streams and listeners) from one thread while a driver
/// on another thread delivers a long run: nothing deadlocks, and every stream that is drained
/// after the run ends sees the end.
#[test]
fn observers_coming_and_going_while_a_driver_delivers_do_not_deadlock() {
    let repo: Repo = Repo::new(spawn_fn(|future| {
        thread::spawn(move || block_on(future));
    }));
    for round in 0..50 {
        let barrier = Barrier::new(2);
        let handle = thread::scope(|scope| {
            let runner = scope.spawn(|| {
                barrier.wait();
                repo.run(round, |_| stream::iter(0..200)).unwrap()
            });
            barrier.wait();
            for _ in 0..50 {
                let stream = repo.stream(round);
                let listener = repo.listen(round, |_| {}, true);
                drop(stream);
                drop(listener);
            }
            runner.join().unwrap()
        });
        let mut states = repo.stream(round);
        assert_eq!(block_on(handle), Outcome::Completed);
        let first = block_on(states.next()).unwrap();
        assert!(first.state().is_some(), "a stream starts with a state");
        drop(states);
    }
    assert!(repo.is_empty());
}

/// A handle is awaited on one thread while the run is stopped on another and its stream is
/// dropped on a third (the executor): the handle never resolves before the stream is gone.
#[test]
fn a_handle_never_resolves_before_its_stream_is_dropped() {
    let repo: Repo = Repo::new(spawn_fn(|future| {
        thread::spawn(move || block_on(future));
    }));
    let barrier = Barrier::new(2);
    for key in 0..200 {
        let alive = Alive::default();
        let tracked = alive.clone();
        let handle = repo
            .run(key, move |_| tracked.track(stream::pending::<u32>()))
            .unwrap();
        let node = running(&repo, key);
        thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                node.stop(None).unwrap();
            });
            barrier.wait();
            let outcome = block_on(handle.clone());
            assert_eq!(alive.count(), 0, "resolved with the stream alive");
            assert_eq!(outcome, Outcome::Stopped { reason: None });
        });
    }
}

/// A handle kept across the key's later runs still resolves to its own run's outcome, keeps
/// the key remembered, and lets it go once dropped.
#[test]
fn an_old_handle_survives_the_key_being_reused() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let old = repo.run(1, |_| stream::iter([1])).unwrap();
    manual.drive(&mut pool);
    let newer = repo.run(1, |_| stream::pending::<u32>()).unwrap();
    running(&repo, 1).stop(Reason::from("newer")).unwrap();
    manual.drive(&mut pool);
    assert_eq!(block_on(old.clone()), Outcome::Completed);
    assert_eq!(block_on(newer), stopped("newer"));
    assert_eq!(repo.len(), 1, "the old handle keeps the key");
    drop(old);
    assert!(repo.is_empty(), "the key outlived its last handle");
}

/// A run linked to a caller's controller ends by itself on the executor thread while another
/// thread aborts the controller: one outcome, agreed by handle and state, and the run's end
/// never aborts the controller.
#[test]
fn linked_abort_racing_natural_completion_has_one_outcome() {
    let held = Held::default();
    let repo = held.repository();
    let barrier = Barrier::new(2);
    for key in 0..ROUNDS {
        let controller = keyrunner_task_runner_repository::AbortController::new();
        let handle = match repo.state_node(key) {
            StateNode::Idle(idle) => idle
                .run_linked(|_| stream::iter([1]), &controller.signal())
                .unwrap(),
            StateNode::Running(_) => panic!("a fresh key is idle"),
        };
        let driver = held.take().pop().unwrap();
        thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                // Usually one poll; a poll that meets the stop half done waits for its signal.
                block_on(driver);
            });
            barrier.wait();
            controller.abort(Some(Reason::from("linked")));
        });
        let outcome = handle.outcome().unwrap();
        assert!(
            outcome == Outcome::Completed || outcome == stopped("linked"),
            "{outcome:?}"
        );
        assert_eq!(repo.state(&key).last_outcome(), Some(&outcome));
        assert_eq!(handle.abort_signal().is_aborted(), outcome.is_stopped());
    }
    assert_eq!(repo.live_tasks(), 0);
}

// ---- Debug never blocks ----------------------------------------------------------------------

/// A hasher that, once armed, parks the thread hashing (which holds the key table's lock)
/// until released or until a generous deadline passes.
#[derive(Clone)]
struct Gate {
    armed: Arc<AtomicBool>,
    entered: mpsc::SyncSender<()>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
    timed_out: Arc<AtomicBool>,
}

impl BuildHasher for Gate {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.send(()).unwrap();
            let release = self.release.lock().unwrap();
            if release.recv_timeout(Duration::from_secs(3)).is_err() {
                self.timed_out.store(true, Ordering::SeqCst);
            }
        }
        DefaultHasher::new()
    }
}

/// `Debug` of a repository is printed while another thread holds the key table's lock (here:
/// a hasher that takes its time). `Debug` must not wait for that lock.
#[test]
fn debug_of_a_repository_never_blocks() {
    let (entered_tx, entered_rx) = mpsc::sync_channel(1);
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Gate {
        armed: Arc::new(AtomicBool::new(false)),
        entered: entered_tx,
        release: Arc::new(Mutex::new(release_rx)),
        timed_out: Arc::new(AtomicBool::new(false)),
    };
    let repo: TaskRunnerRepository<u32, u32, NoError, Gate> =
        TaskRunnerRepository::builder(spawn_fn(drop))
            .hasher(gate.clone())
            .build();
    let _held = repo.listen(2, |_| {}, false);
    thread::scope(|scope| {
        scope.spawn(|| {
            gate.armed.store(true, Ordering::SeqCst);
            let _ = repo.state(&1);
        });
        entered_rx.recv().unwrap();
        let printed = format!("{repo:?} {:?} {:?}", repo.observer(), repo.controller());
        release_tx.send(()).unwrap();
        assert!(printed.contains("TaskRunnerRepository"));
    });
    assert!(
        !gate.timed_out.load(Ordering::SeqCst),
        "Debug waited for the key table's lock"
    );
}
