//! A run's life on one key: transitions, outcomes, handles, the `error` view.

mod common;

use std::sync::Arc;

use common::{Alive, CountingWaker, Manual, recorder};
use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::stream;
use keyrunner_task_runner_repository::{
    LastError, Outcome, Reason, RunError, RunId, State, StateNode,
};

type Repo = keyrunner_task_runner_repository::TaskRunnerRepository<&'static str, u32, String>;

fn idle(last: Option<Outcome<String>>) -> State<u32, String> {
    common::idle(last)
}

fn running(run: RunId, progress: Option<u32>) -> State<u32, String> {
    common::running(run, progress)
}

#[test]
fn a_completed_run_shows_every_transition_in_order() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (seen, listener) = recorder();
    let _subscription = repo.listen("k", listener, true);

    let handle = repo.run("k", |_| stream::iter([1, 2])).unwrap();
    let run = handle.run_id();
    assert_eq!(
        repo.state(&"k"),
        running(run, None),
        "running at once, before any poll"
    );
    manual.drive(&mut pool);

    assert_eq!(
        *seen.lock().unwrap(),
        [
            idle(None),
            running(run, None),
            running(run, Some(1)),
            running(run, Some(2)),
            common::ended(Outcome::Completed, Some(2)),
        ]
    );
    assert_eq!(handle.outcome(), Some(Outcome::Completed));
}

#[test]
fn a_failing_stream_records_its_error_and_drops_the_stream() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let alive = Alive::default();
    let tracked = alive.clone();
    let handle = repo
        .run("k", move |_| {
            tracked.track(stream::iter([Ok(1), Err("boom".to_string()), Ok(3)]))
        })
        .unwrap();
    let _keep = repo.listen("k", |_| {}, false);
    manual.drive(&mut pool);

    let outcome = handle.outcome().unwrap();
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: Arc::new("boom".to_string())
        }
    );
    let state = repo.state(&"k");
    assert_eq!(state.error(), Some(LastError::Failed(&"boom".to_string())));
    assert_eq!(alive.count(), 0, "the stream is dropped after its error");
}

#[test]
fn the_error_view_is_none_unless_stopped_with_a_reason_or_failed() {
    let completed: State<u32, String> = idle(Some(Outcome::Completed));
    let stopped_silently: State<u32, String> = idle(Some(Outcome::Stopped { reason: None }));
    let stopped: State<u32, String> = idle(Some(Outcome::Stopped {
        reason: Some(Reason::from("why")),
    }));
    assert_eq!(completed.error(), None);
    assert_eq!(stopped_silently.error(), None);
    assert_eq!(
        stopped.error(),
        Some(LastError::Stopped(&Reason::from("why")))
    );
}

#[test]
fn stop_idles_the_key_at_once_fires_the_signal_once_and_drops_the_stream() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let alive = Alive::default();
    let tracked = alive.clone();
    let (_tx, rx) = mpsc::unbounded::<u32>();
    let handle = repo.run("k", move |_| tracked.track(rx)).unwrap();
    manual.drive(&mut pool);
    assert_eq!(alive.count(), 1, "the stream is alive while running");

    let fired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&fired);
    handle
        .abort_signal()
        .on_abort(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .detach();

    let StateNode::Running(node) = repo.state_node("k") else {
        panic!("the key is running");
    };
    let stopped = node.handle();
    node.stop(Reason::from("enough")).unwrap();
    assert!(repo.state(&"k").is_idle(), "idle as soon as stop returns");
    assert_eq!(fired.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!handle.is_finished(), "the stream has not been dropped yet");

    manual.drive(&mut pool);
    assert_eq!(alive.count(), 0, "the stream is dropped on its executor");
    let expected = Outcome::Stopped {
        reason: Some(Reason::from("enough")),
    };
    assert_eq!(handle.outcome(), Some(expected.clone()));
    assert_eq!(stopped.outcome(), Some(expected));
    assert_eq!(
        fired.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "exactly once"
    );
}

#[test]
fn a_stale_node_cannot_stop_a_later_run() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let first = repo.run("k", |_| stream::pending::<u32>()).unwrap();
    let StateNode::Running(stale) = repo.state_node("k") else {
        panic!("running");
    };
    let StateNode::Running(fresh) = repo.state_node("k") else {
        panic!("running");
    };
    fresh.stop(None).unwrap();
    let second = repo.run("k", |_| stream::pending::<u32>()).unwrap();

    let error = stale.stop(Reason::from("late")).unwrap_err();
    assert_eq!(error.run_id(), Some(first.run_id()));
    assert_eq!(
        error.to_string(),
        format!("{} has already ended", first.run_id())
    );
    assert_eq!(repo.state(&"k").run_id(), Some(second.run_id()));
    assert!(!second.abort_signal().is_aborted());
    manual.drive(&mut pool);
    assert!(repo.is_running(&"k"));
}

#[test]
fn stale_completion_of_a_stopped_run_does_not_touch_the_next_run() {
    // The original design's bug: run A is stopped, run B starts on the same key, then A's late
    // completion aborts B and idles the key. Here A's items and end are discarded.
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (a_tx, a_rx) = mpsc::unbounded::<u32>();
    let a = repo.run("k", move |_| a_rx).unwrap();
    manual.drive(&mut pool);

    let StateNode::Running(node) = repo.state_node("k") else {
        panic!("running");
    };
    node.stop(None).unwrap();
    let (b_tx, b_rx) = mpsc::unbounded::<u32>();
    let b = repo.run("k", move |_| b_rx).unwrap();

    // A yields and completes late, before its executor got to drop it.
    let _ = a_tx.unbounded_send(99);
    drop(a_tx);
    manual.drive(&mut pool);

    assert_eq!(repo.state(&"k"), running(b.run_id(), None));
    assert!(!b.abort_signal().is_aborted());
    assert_eq!(a.outcome(), Some(Outcome::Stopped { reason: None }));

    b_tx.unbounded_send(7).unwrap();
    drop(b_tx);
    manual.drive(&mut pool);
    assert_eq!(b.outcome(), Some(Outcome::Completed));
    assert_eq!(a.outcome(), Some(Outcome::Stopped { reason: None }));
}

#[test]
fn a_handle_can_be_awaited_by_several_parties_and_dropping_it_detaches() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (tx, rx) = mpsc::unbounded::<u32>();
    let handle = repo.run("k", move |_| rx).unwrap();
    let waiters: Vec<_> = (0..3).map(|_| handle.clone()).collect();
    drop(handle);
    manual.drive(&mut pool);
    assert!(
        repo.is_running(&"k"),
        "dropping a handle does not stop the run"
    );

    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    for waiter in waiters {
        let results = Arc::clone(&results);
        futures::task::LocalSpawnExt::spawn_local(&pool.spawner(), async move {
            let outcome = waiter.await;
            results.lock().unwrap().push(outcome);
        })
        .unwrap();
    }
    pool.run_until_stalled();
    assert!(results.lock().unwrap().is_empty(), "pending while running");

    tx.unbounded_send(1).unwrap();
    drop(tx);
    manual.drive(&mut pool);
    assert_eq!(*results.lock().unwrap(), vec![Outcome::Completed; 3]);
}

#[test]
fn waiting_handles_can_leave_come_back_and_change_wakers() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    fn poll(
        handle: &mut keyrunner_task_runner_repository::RunHandle<String>,
        waker: &(Arc<CountingWaker>, std::task::Waker),
    ) -> Poll<Outcome<String>> {
        Pin::new(handle).poll(&mut Context::from_waker(&waker.1))
    }

    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (tx, rx) = mpsc::unbounded::<u32>();
    let handle = repo.run("k", move |_| rx).unwrap();
    manual.drive(&mut pool);

    let mut handles: Vec<_> = (0..4).map(|_| handle.clone()).collect();
    let wakers: Vec<_> = (0..6).map(|_| CountingWaker::new()).collect();
    for (handle, waker) in handles.iter_mut().zip(&wakers) {
        assert!(poll(handle, waker).is_pending());
    }
    // Two waiting handles leave, a new one comes, one changes its waker.
    drop(handles.remove(2));
    drop(handles.remove(0));
    let mut late = handle.clone();
    assert!(poll(&mut late, &wakers[4]).is_pending());
    assert!(poll(&mut handles[0], &wakers[5]).is_pending());

    tx.unbounded_send(1).unwrap();
    drop(tx);
    manual.drive(&mut pool);
    let woken: Vec<usize> = wakers.iter().map(|(counter, _)| counter.count()).collect();
    // Handle 1 moved from waker 1 to waker 5; handles 0 and 2 left; 3 and the late one wait.
    assert_eq!(woken, [0, 0, 0, 1, 1, 1]);
    for handle in handles.iter_mut().chain([&mut late]) {
        assert_eq!(poll(handle, &wakers[0]), Poll::Ready(Outcome::Completed));
    }
    assert_eq!(wakers[0].0.count(), 0, "a finished run registers no waker");
}

#[test]
fn the_last_outcome_is_kept_while_a_handle_lives_and_forgotten_after() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let handle = repo.run("k", |_| stream::iter([1])).unwrap();
    manual.drive(&mut pool);
    assert_eq!(
        repo.state(&"k"),
        common::ended(Outcome::Completed, Some(1)),
        "idle keeps the run's final progress"
    );
    assert_eq!(repo.len(), 1);
    drop(handle);
    assert_eq!(repo.len(), 0, "idle, unwatched, no handle: forgotten");
    assert_eq!(repo.state(&"k"), idle(None));
}

#[test]
fn a_listener_keeps_the_last_outcome() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let subscription = repo.listen("k", |_| {}, false);
    repo.run("k", |_| stream::iter([1])).unwrap().detach();
    manual.drive(&mut pool);
    assert_eq!(repo.state(&"k"), common::ended(Outcome::Completed, Some(1)));
    subscription.unsubscribe();
    assert!(repo.is_empty());
}

#[test]
fn idle_nodes_report_the_last_outcome() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let handle = repo.run("k", |_| stream::iter([1])).unwrap();
    manual.drive(&mut pool);
    let StateNode::Idle(node) = repo.state_node("k") else {
        panic!("idle");
    };
    assert_eq!(node.last_outcome(), Some(&Outcome::Completed));
    assert_eq!(*node.key(), "k");
    drop(handle);
}

#[test]
fn a_plain_stream_and_a_result_stream_both_work_without_wrappers() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let plain = repo.run("plain", |_| stream::iter([1u32, 2])).unwrap();
    let fallible = repo
        .run("fallible", |_| stream::iter([Ok::<u32, String>(1)]))
        .unwrap();
    manual.drive(&mut pool);
    assert_eq!(plain.outcome(), Some(Outcome::Completed));
    assert_eq!(fallible.outcome(), Some(Outcome::Completed));
}

#[test]
fn the_task_sees_its_key_and_signal() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let sink = Arc::clone(&seen);
    let handle = repo
        .run("k", move |cx| {
            *sink.lock().unwrap() = Some((*cx.key(), cx.abort_signal().is_aborted()));
            stream::empty::<u32>()
        })
        .unwrap();
    manual.drive(&mut pool);
    assert_eq!(*seen.lock().unwrap(), Some(("k", false)));
    assert_eq!(handle.outcome(), Some(Outcome::Completed));
    assert!(
        !handle.abort_signal().is_aborted(),
        "a run's own end fires nothing"
    );
}

#[test]
fn stop_by_key_stops_the_run_current_at_that_instant() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    assert_eq!(
        repo.stop(&"k", Reason::from("nothing")),
        Err(keyrunner_task_runner_repository::StopError::Idle)
    );
    let first = repo.run("k", |_| stream::pending::<u32>()).unwrap();
    assert_eq!(repo.stop(&"k", Reason::from("user")), Ok(first.run_id()));
    manual.drive(&mut pool);
    let second = repo.run("k", |_| stream::pending::<u32>()).unwrap();
    assert_eq!(
        repo.controller().stop(&"k", None),
        Ok(second.run_id()),
        "the run current now, not the one stopped before"
    );
    manual.drive(&mut pool);
    assert_eq!(
        first.outcome(),
        Some(Outcome::Stopped {
            reason: Some(Reason::from("user"))
        })
    );
    assert_eq!(second.outcome(), Some(Outcome::Stopped { reason: None }));
    assert_eq!(
        repo.stop(&"k", None).unwrap_err().to_string(),
        "the key is idle"
    );
}

#[test]
fn is_allocated_follows_what_holds_the_key() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    assert!(!repo.is_allocated(&"k"));
    let handle = repo.run("k", |_| stream::iter([1])).unwrap();
    assert!(repo.is_allocated(&"k"), "running");
    manual.drive(&mut pool);
    assert!(repo.is_allocated(&"k"), "the handle holds it");
    drop(handle);
    assert!(!repo.is_allocated(&"k"), "forgotten");
    let observer = repo.observer();
    let listening = observer.listen("k", |_| {}, false);
    assert!(observer.is_allocated(&"k"));
    drop(listening);
    assert!(!observer.is_allocated(&"k"));
}

#[test]
fn a_running_node_exposes_its_runs_progress() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (tx, rx) = mpsc::unbounded();
    let handle = repo.run("k", move |_| rx).unwrap();
    manual.drive(&mut pool);
    let StateNode::Running(node) = repo.state_node("k") else {
        panic!("running");
    };
    assert_eq!(node.progress(), None);
    tx.unbounded_send(7).unwrap();
    manual.drive(&mut pool);
    assert_eq!(node.progress().as_deref(), Some(&7));
    drop(tx);
    manual.drive(&mut pool);
    assert_eq!(handle.outcome(), Some(Outcome::Completed));
    assert_eq!(
        node.progress().as_deref(),
        Some(&7),
        "what it was when the run ended"
    );
}

#[test]
fn run_errors_box_without_their_task_and_print_each_sentence_once() {
    use std::error::Error;

    let manual = Manual::default();
    let repo: Repo = manual.repository();
    let first = repo.run("k", |_| stream::pending::<u32>()).unwrap();
    // A task that is neither `Sync` nor `Debug`.
    let cell = std::cell::Cell::new(1);
    let task = move |_| stream::iter([cell.get()]);
    let error = repo.run("k", task).unwrap_err();
    assert!(error.is_busy());
    let (free, task) = error.into_parts();
    assert!(task.is_some(), "the task comes back");
    let boxed: Box<dyn Error + Send + Sync + 'static> = Box::new(free);
    assert_eq!(
        boxed.to_string(),
        format!("the key is already running {}", first.run_id())
    );
    assert!(boxed.source().is_none(), "one sentence, printed once");
    assert_eq!(
        format!(
            "{free:?}",
            free = RunError::<()>::Spawn {
                run: first.run_id()
            }
        ),
        format!("Spawn {{ run: {:?} }}", first.run_id())
    );
    drop(repo.shutdown(None));
    let refused = repo.run("k", |_| stream::pending::<u32>()).unwrap_err();
    assert_eq!(
        refused.without_task().to_string(),
        "the repository is shut down"
    );
}
