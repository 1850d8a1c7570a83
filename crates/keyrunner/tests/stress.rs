//! Multi-threaded stress: threads hammer ~1,000 keys with random runs, stops (fresh and stale
//! nodes), replaces, listens and unsubscribes on a multi-thread tokio runtime, while checkers
//! watch every listener's sequence.
//!
//! Checked: every listener sees a legal sequence per key (`Idle → Running(None) →
//! Running(Some)* → Idle(outcome)`, run ids strictly increasing); the items accepted under a run
//! all come from one task, and that task belongs to that run (never two runs' items for one
//! key); a successful stop's outcome is the one the handle reports; every handle resolves; after
//! `shutdown(..).await` no task and no task stream is alive and, once the test lets go of its
//! handles, no key is remembered.
//!
//! Size: `KEYRUNNER_STRESS_OPS` operations in total (default 50,000); `cargo xtask stress` runs
//! 1,000,000 in release.

use std::collections::HashMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use keyrunner::tokio::TokioSpawner;
use keyrunner::{
    Conflict, Event, IdleNode, Outcome, Reason, RunHandle, RunId, RunningNode, State, StateNode,
    Subscription, TaskRunnerRepository,
};

const KEYS: u32 = 1_000;
const THREADS: usize = 2;
/// Longer than any healthy run of `cargo xtask stress`; a run past it is stuck.
const DEADLINE: Duration = Duration::from_secs(300);

/// An item: the token of the task that produced it, and its position in that task's stream.
type Item = (u64, u32);
type Repo = TaskRunnerRepository<u32, Item, String>;
type TaskStream = Tracked<stream::BoxStream<'static, Result<Item, String>>>;
type Sub = Subscription;

fn ops() -> usize {
    std::env::var("KEYRUNNER_STRESS_OPS")
        .ok()
        .and_then(|ops| ops.parse().ok())
        .unwrap_or(50_000)
}

/// A small xorshift generator: deterministic per thread, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Counts task streams alive: incremented on creation, decremented on drop.
struct Tracked<St> {
    inner: Pin<Box<St>>,
    alive: Arc<AtomicUsize>,
}

impl<St> Drop for Tracked<St> {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<St: Stream> Stream for Tracked<St> {
    type Item = St::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        let poll = self.inner.as_mut().poll_next(cx);
        if poll.is_ready() {
            // Widens the window between "the driver saw no abort" and "the driver publishes
            // this item (or the end)", so stops from other threads land inside it.
            std::thread::yield_now();
        }
        poll
    }
}

/// Everything the checkers share.
#[derive(Default)]
struct Shared {
    alive: Arc<AtomicUsize>,
    next_token: AtomicU64,
    /// The run each task token's items were first accepted under.
    token_run: Mutex<HashMap<u64, RunId>>,
    /// The run each task token was started as (recorded once `run` returns).
    started: Mutex<HashMap<u64, RunId>>,
    /// Runs stopped successfully, with the reason given.
    stopped: Mutex<HashMap<RunId, Option<Reason>>>,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, message: String) {
        let mut violations = self
            .violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if violations.len() < 20 {
            violations.push(message);
        }
    }

    /// A task that yields `items` items (yielding to the runtime between them), then ends,
    /// fails, or never ends while ignoring its abort signal.
    fn task(
        self: &Arc<Self>,
        rng: &mut Rng,
    ) -> (
        u64,
        impl FnOnce(keyrunner::TaskContext<u32>) -> TaskStream + Send + 'static,
    ) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let items = rng.below(4) as u32;
        let ending = rng.below(4);
        let alive = Arc::clone(&self.alive);
        let task = move |_cx| {
            let body = stream::iter(0..items).then(move |seq| async move {
                tokio::task::yield_now().await;
                Ok((token, seq))
            });
            let tail: stream::BoxStream<'static, Result<Item, String>> = match ending {
                0 => stream::pending().boxed(),
                1 => stream::iter([Err(format!("task {token} failed"))]).boxed(),
                _ => stream::empty().boxed(),
            };
            alive.fetch_add(1, Ordering::SeqCst);
            Tracked {
                inner: Box::pin(body.chain(tail).boxed()),
                alive,
            }
        };
        (token, task)
    }
}

/// One listener's view of one key: checks that its sequence of states is legal.
struct Checker {
    key: u32,
    /// The run the key runs in the last state seen, if running.
    running: Option<RunId>,
    /// The highest run id seen.
    last_run: Option<RunId>,
    /// The token and position of the last item accepted under `running`.
    last_item: Option<Item>,
    /// Whether any state was seen yet (the first one may be anything).
    started: bool,
    shared: Arc<Shared>,
}

impl Checker {
    fn see(&mut self, state: &State<Item, String>) {
        let key = self.key;
        let fresh = !self.started;
        self.started = true;
        match state {
            State::Running {
                run,
                progress: None,
            } => {
                if !fresh && self.running.is_some() {
                    self.shared.violation(format!(
                        "key {key}: {run} started while {:?} was running",
                        self.running
                    ));
                }
                if self.last_run.is_some_and(|last| *run <= last) {
                    self.shared.violation(format!(
                        "key {key}: {run} after {:?}: run ids must grow",
                        self.last_run
                    ));
                }
                self.running = Some(*run);
                self.last_run = Some(*run);
                self.last_item = None;
            }
            State::Running {
                run,
                progress: Some(item),
            } => {
                let (token, seq) = &**item;
                if fresh {
                    self.running = Some(*run);
                    self.last_run = Some(*run);
                } else if self.running != Some(*run) {
                    self.shared.violation(format!(
                        "key {key}: an item of {run} while the key ran {:?}",
                        self.running
                    ));
                }
                if let Some((last_token, last_seq)) = self.last_item
                    && (last_token != *token || last_seq >= *seq)
                {
                    self.shared.violation(format!(
                        "key {key}: item ({token}, {seq}) after ({last_token}, {last_seq}) in {run}"
                    ));
                }
                let bound = *self
                    .shared
                    .token_run
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(*token)
                    .or_insert(*run);
                if bound != *run {
                    self.shared.violation(format!(
                        "key {key}: task {token}'s items accepted under {bound} and {run}"
                    ));
                }
                self.last_item = Some((*token, *seq));
            }
            State::Idle { last, .. } => {
                if !fresh && self.running.is_none() {
                    self.shared
                        .violation(format!("key {key}: idle ({last:?}) after idle"));
                }
                if !fresh && last.is_none() {
                    self.shared
                        .violation(format!("key {key}: a run ended with no outcome"));
                }
                self.running = None;
                self.last_item = None;
            }
        }
    }
}

/// What one hammering thread holds on to.
#[derive(Default)]
struct Held {
    subscriptions: Vec<Sub>,
    nodes: Vec<StateNode<u32, Item, String>>,
    handles: Vec<RunHandle<String>>,
    /// A handle of each run this thread stopped successfully, with the reason given.
    stopped: Vec<(RunHandle<String>, Option<Reason>)>,
}

fn reason(rng: &mut Rng) -> Option<Reason> {
    (rng.below(2) == 0).then(|| Reason::from(format!("reason {}", rng.below(3))))
}

/// Runs a fresh task on `idle`; a run that starts is recorded for the ownership checks.
fn run(
    idle: IdleNode<u32, Item, String>,
    rng: &mut Rng,
    shared: &Arc<Shared>,
) -> Option<RunHandle<String>> {
    let (token, task) = shared.task(rng);
    let handle = idle.run(task).ok()?;
    shared
        .started
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(token, handle.run_id());
    Some(handle)
}

/// Stops `running` with a random reason; a stop that wins is recorded for the final check of
/// its outcome.
fn stop(running: RunningNode<u32, Item, String>, rng: &mut Rng, shared: &Shared, held: &mut Held) {
    let id = running.run_id();
    let why = reason(rng);
    let handle = running.handle();
    if running.stop(why.clone()).is_ok() {
        held.stopped.push((handle, why.clone()));
        shared
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, why);
    }
}

fn hammer(repo: &Repo, shared: &Arc<Shared>, seed: u64, ops: usize) -> Held {
    let mut rng = Rng(seed);
    let mut held = Held::default();
    for op in 0..ops {
        // A broken invariant often wedges a key for good: stop hammering once one is seen.
        if op % 1_000 == 0
            && !shared
                .violations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        {
            break;
        }
        let key = rng.below(u64::from(KEYS)) as u32;
        let roll = rng.below(100);
        match roll {
            // Run through a fresh node.
            0..30 => {
                if let StateNode::Idle(idle) = repo.state_node(key)
                    && let Some(handle) = run(idle, &mut rng, shared)
                    && rng.below(4) == 0
                {
                    held.handles.push(handle);
                }
            }
            // Stop through a fresh node.
            30..45 => {
                if let StateNode::Running(running) = repo.state_node(key) {
                    stop(running, &mut rng, shared, &mut held);
                }
            }
            // Keep a node to use later, when it may be stale.
            45..52 => {
                let node = repo.state_node(key);
                if held.nodes.len() < 64 {
                    held.nodes.push(node);
                }
            }
            52..60 => {
                if !held.nodes.is_empty() {
                    let index = rng.below(held.nodes.len() as u64) as usize;
                    match held.nodes.swap_remove(index) {
                        StateNode::Idle(idle) => {
                            run(idle, &mut rng, shared);
                        }
                        StateNode::Running(running) => stop(running, &mut rng, shared, &mut held),
                    }
                }
            }
            // Replace or join whatever runs.
            60..70 => {
                let conflict = if rng.below(3) == 0 {
                    Conflict::UseExisting
                } else {
                    Conflict::Replace
                };
                let (token, task) = shared.task(&mut rng);
                if let Ok(handle) = repo.run_with(key, conflict, task) {
                    // With `UseExisting` the handle may be another task's run.
                    if conflict == Conflict::Replace {
                        shared
                            .started
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(token, handle.run_id());
                    }
                    if rng.below(4) == 0 {
                        held.handles.push(handle);
                    }
                }
            }
            // Listen, checking the sequence.
            70..85 => {
                let checker = Mutex::new(Checker {
                    key,
                    running: None,
                    last_run: None,
                    last_item: None,
                    started: false,
                    shared: Arc::clone(shared),
                });
                let subscription = repo.listen(
                    key,
                    move |event: &Event<Item, String>| {
                        if let Some(state) = event.state() {
                            checker
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .see(state);
                        }
                    },
                    rng.below(2) == 0,
                );
                held.subscriptions.push(subscription);
            }
            // Unsubscribe.
            85..95 => {
                if !held.subscriptions.is_empty() {
                    let index = rng.below(held.subscriptions.len() as u64) as usize;
                    held.subscriptions.swap_remove(index).unsubscribe();
                }
            }
            // Let go of a handle.
            _ => {
                if !held.handles.is_empty() {
                    let index = rng.below(held.handles.len() as u64) as usize;
                    drop(held.handles.swap_remove(index));
                }
            }
        }
    }
    held
}

#[test]
fn threads_hammering_a_thousand_keys_keep_every_invariant() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let repo: Repo = TaskRunnerRepository::new(TokioSpawner::new(runtime.handle().clone()));
    let shared = Arc::new(Shared::default());
    let total = ops();
    let barrier = Barrier::new(THREADS);

    let (finished, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            // A deadlock or a livelock cannot be unwound from another thread: report and abort.
            if watch.recv_timeout(DEADLINE) == Err(RecvTimeoutError::Timeout) {
                let violations = shared
                    .violations
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // Straight to stderr: the test harness would swallow a captured `eprintln!`.
                let _ = writeln!(
                    std::io::stderr(),
                    "stress: no progress after {DEADLINE:?}; violations so far:\n{}",
                    violations.join("\n")
                );
                std::process::abort();
            }
        })
    };

    let held: Vec<Held> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (repo, shared, barrier) = (&repo, &shared, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    hammer(
                        repo,
                        shared,
                        0x9E37_79B9_7F4A_7C15 ^ (thread as u64 + 1),
                        total / THREADS,
                    )
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    let violations = shared
        .violations
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );

    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), repo.shutdown(Reason::from("end")))
            .await
            .expect("shutdown resolves once every stream is dropped");
    });
    assert_eq!(repo.live_tasks(), 0, "no task is live after shutdown");
    assert_eq!(
        shared.alive.load(Ordering::SeqCst),
        0,
        "no task stream is alive"
    );

    let stopped = shared
        .stopped
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut handles = 0;
    for held in &held {
        for handle in &held.handles {
            handles += 1;
            let outcome = runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), handle.clone()).await
                })
                .expect("every handle resolves");
            if let Some(reason) = stopped.get(&handle.run_id()) {
                assert_eq!(
                    outcome,
                    Outcome::Stopped {
                        reason: reason.clone()
                    },
                    "the stopper's outcome is the handle's"
                );
            }
        }
    }
    assert!(handles > 0, "the run kept some handles");

    // A successful stop stopped exactly the run its node saw, never a later one.
    for held in &held {
        for (handle, reason) in &held.stopped {
            let outcome = runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), handle.clone()).await
                })
                .expect("every handle resolves");
            assert_eq!(
                outcome,
                Outcome::Stopped {
                    reason: reason.clone()
                },
                "a successful stop's run ended stopped, with that reason"
            );
        }
    }

    let violations = shared
        .violations
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );

    // Every item was accepted under the run its task was started as.
    let started = shared
        .started
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for (token, run) in shared
        .token_run
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        if let Some(expected) = started.get(token) {
            assert_eq!(run, expected, "task {token}'s items belong to its own run");
        }
    }
    assert!(
        !shared
            .token_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty(),
        "items were accepted"
    );

    drop(held);
    assert!(
        repo.is_empty(),
        "no key is remembered at the end: {} left",
        repo.len()
    );
    drop(runtime);
    drop(finished);
    watchdog.join().unwrap();
}
