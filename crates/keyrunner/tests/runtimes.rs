//! The same scenarios on every runtime: tokio (current-thread and multi-thread) and smol (an
//! executor of our own and the global one), plus tokio's refusal after its runtime shut down.
//!
//! Every scenario synchronises through handles, listeners and channels; none sleeps.

mod common;

use common::{ended, on_state};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use keyrunner::task_runner_repository::LastError;
use keyrunner::tokio::TokioSpawner;
use keyrunner::{
    Conflict, Outcome, Reason, RunError, State, StateNode, Subscription, TaskContext,
    TaskRunnerRepository,
};

/// Conversations streaming numbered tokens; a task may fail with a text.
type Repo = TaskRunnerRepository<String, u32, String>;
type Sub = Subscription;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A stream that records its own drop.
struct Watched<St> {
    inner: St,
    dropped: Arc<AtomicBool>,
}

impl<St> Watched<St> {
    fn new(inner: St, dropped: &Arc<AtomicBool>) -> Self {
        Self {
            inner,
            dropped: Arc::clone(dropped),
        }
    }
}

/// A stream yielding 0, then never ending; records its drop.
fn first_zero_then_pending(dropped: &Arc<AtomicBool>) -> Watched<BoxStream<'static, u32>> {
    Watched::new(stream::iter([0]).chain(stream::pending()).boxed(), dropped)
}

impl<St: Stream + Unpin> Stream for Watched<St> {
    type Item = St::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<St> Drop for Watched<St> {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Every state a key's listener received, in order, and a way to wait for one.
struct Recorder {
    received: mpsc::UnboundedReceiver<State<u32, String>>,
    seen: Vec<State<u32, String>>,
    _subscription: Sub,
}

impl Recorder {
    /// Listens to `key` with `immediate`, so the first state seen is the current one.
    fn new(repo: &Repo, key: &str) -> Self {
        let (sender, received) = mpsc::unbounded();
        let subscription = repo.listen(
            key.to_owned(),
            on_state(move |state: &State<u32, String>| {
                // The receiver outlives the subscription: sending cannot fail.
                let _ = sender.unbounded_send(state.clone());
            }),
            true,
        );
        Self {
            received,
            seen: Vec::new(),
            _subscription: subscription,
        }
    }

    /// Waits for the next state matching `wanted`.
    async fn until(&mut self, wanted: impl Fn(&State<u32, String>) -> bool) {
        loop {
            let state = self
                .received
                .next()
                .await
                .expect("the listener lives as long as the recorder");
            let done = wanted(&state);
            self.seen.push(state);
            if done {
                return;
            }
        }
    }

    /// Waits for the key to be idle with an outcome.
    async fn until_ended(&mut self) {
        self.until(|state| state.last_outcome().is_some()).await;
    }
}

fn idle(last: Option<Outcome<String>>) -> State<u32, String> {
    common::idle(last)
}

fn running(run: keyrunner::RunId, progress: Option<u32>) -> State<u32, String> {
    common::running(run, progress)
}

fn stopped(reason: &str) -> Outcome<String> {
    Outcome::Stopped {
        reason: Some(Reason::from(reason)),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<not a string>")
}

/// Stops the run `key` holds now, with `reason`; returns a handle to that run.
fn stop(repo: &Repo, key: &str, reason: &str) -> keyrunner::RunHandle<String> {
    match repo.state_node(key.to_owned()) {
        StateNode::Running(node) => {
            let handle = node.handle();
            node.stop(Reason::from(reason))
                .expect("nothing else stops this key");
            handle
        }
        StateNode::Idle(node) => panic!("{} is idle: {:?}", node.key(), node.last_outcome()),
    }
}

/// A task yielding `tag`, then never ending: tells which task a run runs.
fn tagged(
    tag: u32,
) -> impl FnOnce(TaskContext<String>) -> BoxStream<'static, u32> + Send + 'static {
    move |_| stream::iter([tag]).chain(stream::pending()).boxed()
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn run_progress_then_completed(repo: &Repo) {
    let key = "alice";
    let mut recorder = Recorder::new(repo, key);

    let handle = repo
        .run(key.to_owned(), |_| stream::iter([1, 2, 3]))
        .expect("a fresh key is idle");
    let run = handle.run_id();
    assert_eq!(handle.await, Outcome::Completed);
    recorder.until_ended().await;

    assert_eq!(
        recorder.seen,
        [
            idle(None),
            running(run, None),
            running(run, Some(1)),
            running(run, Some(2)),
            running(run, Some(3)),
            ended(Outcome::Completed, Some(3)),
        ]
    );
    assert_eq!(
        repo.state(&key.to_owned()),
        ended(Outcome::Completed, Some(3))
    );
}

async fn stop_mid_stream_with_a_reason(repo: &Repo) {
    let key = "bob";
    let mut recorder = Recorder::new(repo, key);
    let (tokens, receiver) = mpsc::unbounded::<u32>();
    let dropped = Arc::new(AtomicBool::new(false));
    let aborts = Arc::new(AtomicUsize::new(0));

    let (task_dropped, task_aborts) = (Arc::clone(&dropped), Arc::clone(&aborts));
    let handle = repo
        .run(key.to_owned(), move |cx: TaskContext<String>| {
            cx.abort_signal()
                .on_abort(move |_| {
                    task_aborts.fetch_add(1, Ordering::SeqCst);
                })
                .detach();
            Watched::new(receiver, &task_dropped)
        })
        .expect("a fresh key is idle");
    let run = handle.run_id();

    tokens.unbounded_send(1).expect("the stream is alive");
    recorder.until(|state| state.progress() == Some(&1)).await;
    assert!(!dropped.load(Ordering::SeqCst));

    let stopper = stop(repo, key, "user interrupted");
    // Idle at once, and the signal fired, before the stream is even dropped.
    assert_eq!(
        repo.state(&key.to_owned()),
        ended(stopped("user interrupted"), Some(1))
    );
    assert_eq!(aborts.load(Ordering::SeqCst), 1);

    assert_eq!(handle.await, stopped("user interrupted"));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handle resolves after the drop"
    );
    assert_eq!(stopper.await, stopped("user interrupted"));
    assert_eq!(
        aborts.load(Ordering::SeqCst),
        1,
        "the signal fires exactly once"
    );
    // Items sent after the stop go nowhere.
    assert!(tokens.unbounded_send(2).is_err());

    recorder.until_ended().await;
    assert_eq!(
        recorder.seen,
        [
            idle(None),
            running(run, None),
            running(run, Some(1)),
            ended(stopped("user interrupted"), Some(1)),
        ]
    );
}

async fn a_failing_stream_ends_failed(repo: &Repo) {
    let key = "carol";
    let mut recorder = Recorder::new(repo, key);
    let handle = repo
        .run(key.to_owned(), |_| {
            stream::iter([Ok(1), Err("model overloaded".to_owned()), Ok(2)])
        })
        .expect("a fresh key is idle");
    let run = handle.run_id();
    let outcome = handle.await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: Arc::new("model overloaded".to_owned())
        }
    );

    recorder.until_ended().await;
    assert_eq!(
        recorder.seen,
        [
            idle(None),
            running(run, None),
            running(run, Some(1)),
            ended(outcome, Some(1)),
        ]
    );
    let state = repo.state(&key.to_owned());
    assert_eq!(
        state.error(),
        Some(LastError::Failed(&"model overloaded".to_owned()))
    );
}

async fn a_panicking_task_ends_panicked_and_the_key_is_usable(repo: &Repo) {
    let key = "dave";
    let mut recorder = Recorder::new(repo, key);

    // A stream that panics when polled.
    let handle = repo
        .run(key.to_owned(), |_| {
            stream::poll_fn(|_| -> Poll<Option<u32>> { panic!("agent crashed") })
        })
        .expect("a fresh key is idle");
    let crashed = Outcome::Panicked {
        message: Some(Arc::from("agent crashed")),
    };
    assert_eq!(handle.await, crashed);
    recorder.until_ended().await;
    assert_eq!(repo.state(&key.to_owned()), idle(Some(crashed)));

    // A task function that panics before it returns a stream.
    let handle = repo
        .run(
            key.to_owned(),
            |_: TaskContext<String>| -> stream::Empty<u32> { panic!("no stream today") },
        )
        .expect("the key is idle again");
    assert_eq!(
        handle.await,
        Outcome::Panicked {
            message: Some(Arc::from("no stream today")),
        }
    );

    // Nothing is poisoned: the key runs again.
    let handle = repo
        .run(key.to_owned(), |_| stream::iter([7]))
        .expect("the key is idle again");
    assert_eq!(handle.await, Outcome::Completed);
}

async fn two_racing_runs_one_wins_the_other_gets_its_task_back(repo: &Repo) {
    const ROUNDS: u32 = 24;
    for round in 0..ROUNDS {
        let key = format!("race-{round}");
        let barrier = Barrier::new(2);
        let [first, second] = std::thread::scope(|scope| {
            let racers = [round * 2, round * 2 + 1].map(|tag| {
                let (key, barrier) = (key.clone(), &barrier);
                scope.spawn(move || {
                    let task = tagged(tag);
                    barrier.wait();
                    (tag, repo.run(key, task))
                })
            });
            racers.map(|racer| racer.join().expect("a racer does not panic"))
        });

        let (((_, Ok(winner)), (loser_tag, Err(error)))
        | ((loser_tag, Err(error)), (_, Ok(winner)))) = (first, second)
        else {
            panic!("round {round}: not exactly one winner");
        };
        let RunError::Busy { task, running } = error else {
            panic!("round {round}: the loser got {error:?}, not Busy");
        };
        assert_eq!(running, winner.run_id());

        assert_eq!(stop(repo, &key, "next").await, stopped("next"));
        assert_eq!(winner.await, stopped("next"));

        // The task handed back is the loser's own: run it and see its tag.
        let mut recorder = Recorder::new(repo, &key);
        let rerun = repo.run(key.clone(), task).expect("the key is idle");
        recorder
            .until(|state| state.progress() == Some(&loser_tag))
            .await;
        drop(stop(repo, &key, "done"));
        assert_eq!(rerun.await, stopped("done"));
    }
}

async fn replace_stops_the_running_task_as_superseded(repo: &Repo) {
    let key = "erin";
    let dropped = Arc::new(AtomicBool::new(false));
    let task_dropped = Arc::clone(&dropped);
    let old = repo
        .run(key.to_owned(), move |_| {
            first_zero_then_pending(&task_dropped)
        })
        .expect("a fresh key is idle");
    let mut recorder = Recorder::new(repo, key);
    // The old stream exists and is pending.
    recorder.until(|state| state.progress() == Some(&0)).await;
    let seen_before = recorder.seen.len();
    let new = repo
        .run_with(key.to_owned(), Conflict::Replace, |_| stream::iter([4, 2]))
        .expect("replace always runs");
    assert_ne!(new.run_id(), old.run_id());
    assert_eq!(
        old.abort_signal().reason(),
        Some(Reason::superseded()),
        "the old run was asked to stop"
    );
    assert!(!new.abort_signal().is_aborted());

    let (old_id, new_id) = (old.run_id(), new.run_id());
    assert_eq!(
        old.await,
        Outcome::Stopped {
            reason: Some(Reason::superseded())
        }
    );
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(new.await, Outcome::Completed);

    recorder
        .until(|state| state.last_outcome() == Some(&Outcome::Completed))
        .await;
    assert_eq!(recorder.seen[seen_before - 1], running(old_id, Some(0)));
    assert_eq!(
        recorder.seen[seen_before..],
        [
            ended(
                Outcome::Stopped {
                    reason: Some(Reason::superseded())
                },
                Some(0)
            ),
            running(new_id, None),
            running(new_id, Some(4)),
            running(new_id, Some(2)),
            ended(Outcome::Completed, Some(2)),
        ]
    );
}

async fn use_existing_hands_back_the_running_run(repo: &Repo) {
    let key = "frank";
    let first = repo
        .run(key.to_owned(), |_| stream::pending::<u32>())
        .expect("a fresh key is idle");

    let called = Arc::new(AtomicBool::new(false));
    let task_called = Arc::clone(&called);
    let second = repo
        .run_with(key.to_owned(), Conflict::UseExisting, move |_| {
            task_called.store(true, Ordering::SeqCst);
            stream::iter([1])
        })
        .expect("use-existing never refuses");
    assert_eq!(second.run_id(), first.run_id());

    // Conflict::Reject (the default) refuses and hands the task back.
    let refused = repo.run(key.to_owned(), |_| stream::iter([1]));
    let Err(error) = refused else {
        panic!("the key is running");
    };
    assert!(error.is_busy());
    assert_eq!(
        error.to_string(),
        format!("the key is already running {}", first.run_id())
    );
    assert!(error.into_task().is_some());

    drop(stop(repo, key, "enough"));
    assert_eq!(first.await, stopped("enough"));
    assert_eq!(second.await, stopped("enough"));
    assert!(!called.load(Ordering::SeqCst), "the new task was never run");
}

async fn shutdown_stops_every_run_and_refuses_later_ones(repo: &Repo) {
    let keys = ["g1", "g2", "g3"];
    let runs = keys.map(|key| {
        let dropped = Arc::new(AtomicBool::new(false));
        let task_dropped = Arc::clone(&dropped);
        let handle = repo
            .run(key.to_owned(), move |_| {
                first_zero_then_pending(&task_dropped)
            })
            .expect("a fresh key is idle");
        (handle, dropped)
    });
    let mut recorders = keys.map(|key| Recorder::new(repo, key));
    for recorder in &mut recorders {
        recorder.until(|state| state.progress() == Some(&0)).await;
    }

    repo.shutdown(Reason::from("shutting down")).await;
    assert!(repo.is_shut_down());
    assert_eq!(repo.live_tasks(), 0);
    assert!(repo.running_keys().is_empty());
    for (handle, dropped) in runs {
        assert!(dropped.load(Ordering::SeqCst));
        assert!(handle.is_finished());
        assert_eq!(handle.await, stopped("shutting down"));
    }
    for recorder in &mut recorders {
        recorder.until_ended().await;
    }

    let refused = repo.run("g4".to_owned(), |_| stream::iter([1]));
    let Err(error) = refused else {
        panic!("a shut-down repository refuses runs");
    };
    assert!(error.is_shut_down());
    assert!(error.into_task().is_some(), "the task is handed back");
    assert_eq!(repo.state(&"g4".to_owned()), idle(None));

    // Shutting down again resolves at once.
    repo.shutdown(None).await;
}

/// How a stopped run's stream misbehaves after the stop.
#[derive(Clone, Copy, Debug)]
enum Late {
    Item,
    Completion,
    Error,
    Panic,
}

/// A stream that, when first polled, runs `hook` (which stops its own run and starts the next
/// one), then yields, ends, fails or panics as `late` says: the stale run's last word arrives
/// after the next run took the key.
struct LateStream {
    hook: Option<Box<dyn FnOnce() + Send>>,
    late: Late,
}

impl Stream for LateStream {
    type Item = Result<u32, String>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(hook) = self.hook.take() {
            hook();
        }
        match self.late {
            Late::Item => Poll::Ready(Some(Ok(99))),
            Late::Completion => Poll::Ready(None),
            Late::Error => Poll::Ready(Some(Err("late failure".to_owned()))),
            Late::Panic => panic!("late panic"),
        }
    }
}

async fn stale_completion_of_a_stopped_run_does_not_touch_the_next_run(repo: &Repo) {
    // 1. The stale word arrives while the stopped run's stream is being polled.
    for late in [Late::Item, Late::Completion, Late::Error, Late::Panic] {
        let key = format!("stale-{late:?}");
        let mut recorder = Recorder::new(repo, &key);
        let (next_tokens, next_stream) = mpsc::unbounded::<u32>();
        let (next_handle_sender, next_handle) = oneshot::channel();

        let (hook_repo, hook_key) = (repo.clone(), key.clone());
        let hook = move || {
            drop(stop(&hook_repo, &hook_key, "interrupted"));
            let next = hook_repo
                .run(hook_key, move |_| next_stream)
                .expect("the stop made the key idle");
            let _ = next_handle_sender.send(next);
        };
        let stale = repo
            .run(key.clone(), move |_| LateStream {
                hook: Some(Box::new(hook)),
                late,
            })
            .expect("a fresh key is idle");
        let next = next_handle.await.expect("the hook ran");
        let (stale_id, next_id) = (stale.run_id(), next.run_id());

        // The stale stream is dropped once its handle resolves: its last word has been handled.
        assert_eq!(stale.await, stopped("interrupted"), "{late:?}");
        assert_eq!(repo.state(&key), running(next_id, None), "{late:?}");

        next_tokens
            .unbounded_send(1)
            .expect("the next run is alive");
        recorder.until(|state| state.progress() == Some(&1)).await;
        drop(next_tokens);
        assert_eq!(next.await, Outcome::Completed, "{late:?}");
        recorder.until_ended().await;
        assert_eq!(
            recorder.seen,
            [
                idle(None),
                running(stale_id, None),
                idle(Some(stopped("interrupted"))),
                running(next_id, None),
                running(next_id, Some(1)),
                ended(Outcome::Completed, Some(1)),
            ],
            "{late:?}"
        );
    }

    // 2. The stopped run's channel is fed and closed after the next run started.
    let key = "stale-channel".to_owned();
    let mut recorder = Recorder::new(repo, &key);
    let (stale_tokens, stale_stream) = mpsc::unbounded::<Result<u32, String>>();
    let stale = repo
        .run(key.clone(), move |_| stale_stream)
        .expect("a fresh key is idle");
    stale_tokens
        .unbounded_send(Ok(1))
        .expect("the stream is alive");
    recorder.until(|state| state.progress() == Some(&1)).await;

    drop(stop(repo, &key, "interrupted"));
    let (next_tokens, next_stream) = mpsc::unbounded::<u32>();
    let next = repo
        .run(key.clone(), move |_| next_stream)
        .expect("the stop made the key idle");
    let _ = stale_tokens.unbounded_send(Ok(2));
    let _ = stale_tokens.unbounded_send(Err("late failure".to_owned()));
    drop(stale_tokens);
    assert_eq!(stale.await, stopped("interrupted"));
    assert_eq!(repo.state(&key), running(next.run_id(), None));

    next_tokens
        .unbounded_send(3)
        .expect("the next run is alive");
    recorder.until(|state| state.progress() == Some(&3)).await;
    assert_eq!(repo.state(&key), running(next.run_id(), Some(3)));
    drop(next_tokens);
    assert_eq!(next.await, Outcome::Completed);
}

// ---------------------------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------------------------

fn tokio_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime can be built")
}

fn tokio_multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime can be built")
}

macro_rules! on_every_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod tokio_current_thread {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    let runtime = tokio_current_thread();
                    let repo = Repo::new(TokioSpawner::new(runtime.handle().clone()));
                    runtime.block_on(super::$scenario(&repo));
                }
            )*
        }

        mod tokio_multi_thread {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    let runtime = tokio_multi_thread();
                    let repo = Repo::new(TokioSpawner::new(runtime.handle().clone()));
                    runtime.block_on(super::$scenario(&repo));
                }
            )*
        }

        mod smol_executor {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    let executor = Arc::new(smol::Executor::new());
                    let repo = Repo::new(keyrunner::smol::SmolSpawner::new(Arc::clone(&executor)));
                    smol::block_on(executor.run(super::$scenario(&repo)));
                }
            )*
        }

        mod smol_global {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    let repo = Repo::new(keyrunner::smol::SmolSpawner::global());
                    smol::block_on(super::$scenario(&repo));
                }
            )*
        }
    };
}

on_every_runtime!(
    run_progress_then_completed,
    stop_mid_stream_with_a_reason,
    a_failing_stream_ends_failed,
    a_panicking_task_ends_panicked_and_the_key_is_usable,
    two_racing_runs_one_wins_the_other_gets_its_task_back,
    replace_stops_the_running_task_as_superseded,
    use_existing_hands_back_the_running_run,
    shutdown_stops_every_run_and_refuses_later_ones,
    stale_completion_of_a_stopped_run_does_not_touch_the_next_run,
);

// ---------------------------------------------------------------------------------------------
// Tokio specifics
// ---------------------------------------------------------------------------------------------

fn a_shut_down_runtime_refuses(runtime: tokio::runtime::Runtime) {
    let repo = Repo::new(TokioSpawner::new(runtime.handle().clone()));
    // Dropping waits for the workers to exit: the runtime is shut down, not shutting down.
    drop(runtime);

    let key = "late".to_owned();
    let _listener = repo.listen(key.clone(), |_| {}, false);
    let called = Arc::new(AtomicBool::new(false));
    let task_called = Arc::clone(&called);
    let refused = repo.run(key.clone(), move |_| {
        task_called.store(true, Ordering::SeqCst);
        stream::iter([1])
    });
    let Err(error) = refused else {
        panic!("a shut-down runtime cannot run anything");
    };
    let RunError::Spawn { run } = &error else {
        panic!("expected a spawn error, got {error:?}");
    };
    assert_eq!(
        error.to_string(),
        format!("the spawner dropped {run} without running it")
    );
    assert!(
        std::error::Error::source(&error).is_none(),
        "the sentence is printed once in a chain"
    );
    assert!(
        error.into_task().is_none(),
        "the task went down with the driver"
    );
    assert!(!called.load(Ordering::SeqCst));
    assert!(!repo.is_running(&key));
    assert_eq!(repo.state(&key), idle(Some(Outcome::Lost)));
    assert_eq!(repo.live_tasks(), 0);
}

#[test]
fn a_shut_down_current_thread_runtime_refuses_runs() {
    a_shut_down_runtime_refuses(tokio_current_thread());
}

#[test]
fn a_shut_down_multi_thread_runtime_refuses_runs() {
    a_shut_down_runtime_refuses(tokio_multi_thread());
}

#[test]
fn tokio_spawner_current_needs_a_runtime() {
    assert!(TokioSpawner::try_current().is_none());
    let payload = panic::catch_unwind(AssertUnwindSafe(TokioSpawner::current))
        .expect_err("outside a runtime there is no current handle");
    assert!(
        panic_message(&*payload).contains("Tokio 1.x runtime"),
        "{}",
        panic_message(&*payload)
    );

    let runtime = tokio_current_thread();
    let spawner = runtime.block_on(async { TokioSpawner::try_current() });
    let spawner = spawner.expect("inside a runtime there is a handle");
    let repo = Repo::new(spawner.clone());
    let handle = repo
        .run("k".to_owned(), |_| stream::iter([1]))
        .expect("a fresh key is idle");
    assert_eq!(runtime.block_on(handle), Outcome::Completed);
    assert!(format!("{spawner:?}").starts_with("TokioSpawner"));
}
