//! Model-based property test: random operation sequences, applied to the repository and to a
//! plain single-threaded reference model, agree after every step.
//!
//! Compared after each step: every key's state, every live listener's whole sequence of states,
//! every held handle's outcome (once finished), the set of remembered keys (`len`), the number
//! of live tasks and live task streams, and whether a pending shutdown has resolved.
//!
//! Cases: `KEYRUNNER_PROPTEST_CASES` (default 256); `cargo xtask proptest` runs 10,000. A
//! failing case is saved under `tests/proptest-regressions/` and replayed first on every run.

mod common;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use common::{Manual, on_state};
use futures::Stream;
use futures::channel::mpsc;
use futures::executor::LocalPool;
use keyrunner_task_runner_repository::{
    Conflict, Outcome, Reason, RunError, RunHandle, RunId, Shutdown, State, StateNode,
    Subscription, TaskRunnerRepository,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

type Key = u8;
type Repo = TaskRunnerRepository<Key, u32, String>;
type RealState = State<u32, String>;

const KEYS: Key = 3;
const STREAM_PANIC: &str = "task stream panicked";
const TASK_PANIC: &str = "task function panicked";

// ---------------------------------------------------------------------------------------------
// Operations

/// What the test tells one run's stream to do next.
#[derive(Debug, Clone, PartialEq)]
enum Cmd {
    Item(u32),
    Fail(String),
    Panic,
    End,
}

#[derive(Debug, Clone)]
enum Op {
    Listen {
        key: Key,
        immediate: bool,
    },
    Unsubscribe {
        pick: usize,
    },
    Run {
        key: Key,
        conflict: Conflict,
        panics_on_start: bool,
    },
    TakeNode {
        key: Key,
    },
    UseNode {
        pick: usize,
        reason: Option<u8>,
    },
    DropNode {
        pick: usize,
    },
    Stop {
        key: Key,
        reason: Option<u8>,
    },
    Emit {
        pick: usize,
        cmd: Cmd,
    },
    CloneHandle {
        pick: usize,
    },
    DropHandle {
        pick: usize,
    },
    Drive,
    Shutdown {
        reason: Option<u8>,
    },
}

fn reason(code: Option<u8>) -> Option<String> {
    code.map(|code| format!("reason {code}"))
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let pick = any::<usize>();
    let why = proptest::option::of(0..3u8);
    let conflict = prop_oneof![
        Just(Conflict::Reject),
        Just(Conflict::UseExisting),
        Just(Conflict::Replace)
    ];
    let cmd = prop_oneof![
        6 => (0..4u32).prop_map(Cmd::Item),
        1 => (0..2u8).prop_map(|e| Cmd::Fail(format!("error {e}"))),
        1 => Just(Cmd::Panic),
        2 => Just(Cmd::End),
    ];
    prop_oneof![
        3 => (key.clone(), any::<bool>()).prop_map(|(key, immediate)| Op::Listen { key, immediate }),
        2 => pick.prop_map(|pick| Op::Unsubscribe { pick }),
        4 => (key.clone(), conflict, proptest::bool::weighted(0.1))
            .prop_map(|(key, conflict, panics_on_start)| Op::Run { key, conflict, panics_on_start }),
        2 => key.clone().prop_map(|key| Op::TakeNode { key }),
        2 => (pick, why.clone()).prop_map(|(pick, reason)| Op::UseNode { pick, reason }),
        1 => pick.prop_map(|pick| Op::DropNode { pick }),
        2 => (key, why.clone()).prop_map(|(key, reason)| Op::Stop { key, reason }),
        6 => (pick, cmd).prop_map(|(pick, cmd)| Op::Emit { pick, cmd }),
        1 => pick.prop_map(|pick| Op::CloneHandle { pick }),
        2 => pick.prop_map(|pick| Op::DropHandle { pick }),
        5 => Just(Op::Drive),
        1 => why.prop_map(|reason| Op::Shutdown { reason }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model: plain data, one thread, no cleverness.

#[derive(Debug, Clone, PartialEq)]
enum MOutcome {
    Completed,
    Stopped(Option<String>),
    Failed(String),
    Panicked(Option<String>),
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
enum MState {
    /// Last outcome and the last run's final progress.
    Idle(Option<MOutcome>, Option<u32>),
    /// Run index (into `Model::runs`) and last progress.
    Running(usize, Option<u32>),
}

#[derive(Debug)]
struct MRun {
    key: Key,
    panics_on_start: bool,
    /// Commands sent to the stream and not consumed yet.
    pending: VecDeque<Cmd>,
    /// The task function has been called and its stream exists.
    stream_alive: bool,
    /// The abort signal fired (stop, replace or shutdown).
    aborted: bool,
    /// The outcome recorded so far.
    outcome: Option<MOutcome>,
    /// The driver has dropped the stream and resolved the handles.
    finished: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MNode {
    Idle(Key),
    Running(Key, usize),
}

#[derive(Debug, PartialEq)]
enum MRunError {
    Busy(usize),
    ShutDown,
}

#[derive(Debug, Default)]
struct Model {
    states: HashMap<Key, MState>,
    runs: Vec<MRun>,
    /// Key and seen states of each live listener, in the harness's order.
    listeners: Vec<(Key, Vec<MState>)>,
    /// Run index of each held handle, in the harness's order.
    handles: Vec<usize>,
    nodes: Vec<MNode>,
    shut_down: bool,
}

impl Model {
    fn state(&self, key: Key) -> MState {
        self.states
            .get(&key)
            .cloned()
            .unwrap_or(MState::Idle(None, None))
    }

    fn set(&mut self, key: Key, state: MState) {
        for (listened, seen) in &mut self.listeners {
            if *listened == key {
                seen.push(state.clone());
            }
        }
        self.states.insert(key, state);
    }

    /// The running run's progress.
    fn progress(&self, key: Key) -> Option<u32> {
        match self.state(key) {
            MState::Running(_, progress) => progress,
            MState::Idle(..) => None,
        }
    }

    fn running(&self, key: Key) -> Option<usize> {
        match self.state(key) {
            MState::Running(run, _) => Some(run),
            MState::Idle(..) => None,
        }
    }

    fn listen(&mut self, key: Key, immediate: bool) {
        let seen = if immediate {
            vec![self.state(key)]
        } else {
            Vec::new()
        };
        self.listeners.push((key, seen));
    }

    fn start(&mut self, key: Key, panics_on_start: bool) -> Result<usize, MRunError> {
        if self.shut_down {
            return Err(MRunError::ShutDown);
        }
        if let Some(running) = self.running(key) {
            return Err(MRunError::Busy(running));
        }
        let run = self.runs.len();
        self.runs.push(MRun {
            key,
            panics_on_start,
            pending: VecDeque::new(),
            stream_alive: false,
            aborted: false,
            outcome: None,
            finished: false,
        });
        self.set(key, MState::Running(run, None));
        Ok(run)
    }

    /// `run_with`: returns the run index the handle refers to.
    fn run_with(
        &mut self,
        key: Key,
        conflict: Conflict,
        panics_on_start: bool,
    ) -> Result<usize, MRunError> {
        if let Some(running) = self.running(key) {
            match conflict {
                Conflict::Reject => return Err(MRunError::Busy(running)),
                Conflict::UseExisting => return Ok(running),
                Conflict::Replace => {
                    self.stop(running, Some("superseded".to_owned()))
                        .expect("the run was running");
                }
            }
        }
        self.start(key, panics_on_start)
    }

    /// Stops `run` if it still holds its key.
    fn stop(&mut self, run: usize, reason: Option<String>) -> Result<(), usize> {
        let key = self.runs[run].key;
        if self.running(key) != Some(run) {
            return Err(run);
        }
        let outcome = MOutcome::Stopped(reason);
        self.runs[run].outcome = Some(outcome.clone());
        self.runs[run].aborted = true;
        let progress = self.progress(key);
        self.set(key, MState::Idle(Some(outcome), progress));
        Ok(())
    }

    fn shutdown(&mut self, reason: Option<String>) {
        self.shut_down = true;
        for key in 0..KEYS {
            if let Some(run) = self.running(key) {
                self.stop(run, reason.clone()).expect("the run was running");
            }
        }
    }

    fn conclude(&mut self, run: usize, outcome: MOutcome) {
        let key = self.runs[run].key;
        assert_eq!(
            self.running(key),
            Some(run),
            "model: only the current run concludes"
        );
        self.runs[run].outcome = Some(outcome.clone());
        let progress = self.progress(key);
        self.set(key, MState::Idle(Some(outcome), progress));
        self.finish(run);
    }

    fn finish(&mut self, run: usize) {
        self.runs[run].stream_alive = false;
        self.runs[run].finished = true;
    }

    /// Every unfinished driver runs until its stream has nothing more to say.
    fn drive(&mut self) {
        for run in 0..self.runs.len() {
            if self.runs[run].finished {
                continue;
            }
            if self.runs[run].aborted {
                self.finish(run);
                continue;
            }
            if !self.runs[run].stream_alive {
                if self.runs[run].panics_on_start {
                    self.conclude(run, MOutcome::Panicked(Some(TASK_PANIC.to_owned())));
                    continue;
                }
                self.runs[run].stream_alive = true;
            }
            while let Some(cmd) = self.runs[run].pending.pop_front() {
                let key = self.runs[run].key;
                match cmd {
                    Cmd::Item(item) => self.set(key, MState::Running(run, Some(item))),
                    Cmd::Fail(error) => {
                        self.conclude(run, MOutcome::Failed(error));
                        break;
                    }
                    Cmd::Panic => {
                        self.conclude(run, MOutcome::Panicked(Some(STREAM_PANIC.to_owned())));
                        break;
                    }
                    Cmd::End => {
                        self.conclude(run, MOutcome::Completed);
                        break;
                    }
                }
            }
        }
    }

    fn emit(&mut self, run: usize, cmd: Cmd) {
        if !self.runs[run].finished {
            self.runs[run].pending.push_back(cmd);
        }
    }

    /// A key is remembered iff it runs, a driver of it is alive, or it is listened to, or a
    /// handle or running node of one of its runs is held. A forgotten key forgets its outcome.
    fn remembered(&self, key: Key) -> bool {
        self.running(key).is_some()
            || self.runs.iter().any(|run| run.key == key && !run.finished)
            || self.listeners.iter().any(|(listened, _)| *listened == key)
            || self.handles.iter().any(|&run| self.runs[run].key == key)
            || self
                .nodes
                .iter()
                .any(|node| matches!(node, MNode::Running(k, _) if *k == key))
    }

    fn forget_unheld(&mut self) {
        for key in 0..KEYS {
            if !self.remembered(key) {
                self.states.remove(&key);
            }
        }
    }

    fn live_tasks(&self) -> usize {
        self.runs.iter().filter(|run| !run.finished).count()
    }

    fn live_streams(&self) -> usize {
        self.runs.iter().filter(|run| run.stream_alive).count()
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test, driven in lock-step with the model.

/// A stream scripted by the test through a channel; counts itself while alive.
struct Script {
    commands: mpsc::UnboundedReceiver<Cmd>,
    alive: Arc<AtomicUsize>,
}

impl Script {
    fn new(commands: mpsc::UnboundedReceiver<Cmd>, alive: Arc<AtomicUsize>) -> Self {
        alive.fetch_add(1, Ordering::SeqCst);
        Self { commands, alive }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stream for Script {
    type Item = Result<u32, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.commands).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None | Some(Cmd::End)) => Poll::Ready(None),
            Poll::Ready(Some(Cmd::Item(item))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(Some(Cmd::Fail(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Some(Cmd::Panic)) => panic!("{}", STREAM_PANIC),
        }
    }
}

type Recorded = Arc<Mutex<Vec<RealState>>>;

struct Harness {
    manual: Manual,
    pool: LocalPool,
    repo: Repo,
    alive: Arc<AtomicUsize>,
    /// Real run id of each model run, in start order.
    ids: Vec<RunId>,
    /// Command sender of each model run.
    senders: Vec<mpsc::UnboundedSender<Cmd>>,
    listeners: Vec<(Subscription, Recorded)>,
    handles: Vec<RunHandle<String>>,
    nodes: Vec<StateNode<Key, u32, String>>,
    shutdown: Option<Shutdown>,
    model: Model,
}

impl Harness {
    fn new() -> Self {
        let manual = Manual::default();
        let repo = manual.repository();
        Self {
            manual,
            pool: LocalPool::new(),
            repo,
            alive: Arc::new(AtomicUsize::new(0)),
            ids: Vec::new(),
            senders: Vec::new(),
            listeners: Vec::new(),
            handles: Vec::new(),
            nodes: Vec::new(),
            shutdown: None,
            model: Model::default(),
        }
    }

    fn run_index(&self, id: RunId) -> usize {
        self.ids
            .iter()
            .position(|&known| known == id)
            .unwrap_or_else(|| panic!("{id} was never started"))
    }

    fn translate_outcome(outcome: &Outcome<String>) -> MOutcome {
        match outcome {
            Outcome::Completed => MOutcome::Completed,
            Outcome::Stopped { reason } => {
                MOutcome::Stopped(reason.as_ref().map(|r| r.as_str().to_owned()))
            }
            Outcome::Failed { error } => MOutcome::Failed(String::clone(error)),
            Outcome::Panicked { message } => {
                MOutcome::Panicked(message.as_ref().map(|m| m.to_string()))
            }
            Outcome::Lost => MOutcome::Lost,
        }
    }

    fn translate(&self, state: &RealState) -> MState {
        match state {
            State::Idle { last, progress } => MState::Idle(
                last.as_ref().map(Self::translate_outcome),
                progress.as_deref().copied(),
            ),
            State::Running { run, progress } => {
                MState::Running(self.run_index(*run), progress.as_deref().copied())
            }
        }
    }

    /// A task scripted by a fresh channel; returns the task and the channel's sender.
    fn task(
        &self,
        panics_on_start: bool,
    ) -> (
        impl FnOnce(keyrunner_task_runner_repository::TaskContext<Key>) -> Script + Send + 'static,
        mpsc::UnboundedSender<Cmd>,
    ) {
        let (sender, receiver) = mpsc::unbounded();
        let alive = Arc::clone(&self.alive);
        let task = move |_cx| {
            if panics_on_start {
                panic!("{}", TASK_PANIC);
            }
            Script::new(receiver, alive)
        };
        (task, sender)
    }

    /// Records a freshly started run; ids must grow strictly.
    fn started(&mut self, id: RunId, sender: mpsc::UnboundedSender<Cmd>) {
        if let Some(last) = self.ids.last() {
            assert!(id > *last, "run ids grow: {id} after {last}");
        }
        self.ids.push(id);
        self.senders.push(sender);
    }

    /// Checks a run's result against the model's and keeps the handle.
    fn check_run<F>(
        &mut self,
        real: Result<RunHandle<String>, RunError<F>>,
        model: Result<usize, MRunError>,
        sender: mpsc::UnboundedSender<Cmd>,
    ) {
        match (real, model) {
            (Ok(handle), Ok(run)) => {
                if run == self.ids.len() {
                    self.started(handle.run_id(), sender);
                }
                assert_eq!(self.run_index(handle.run_id()), run, "the handle's run");
                self.handles.push(handle);
                self.model.handles.push(run);
            }
            (Err(RunError::Busy { running, .. }), Err(MRunError::Busy(run))) => {
                assert_eq!(self.run_index(running), run, "busy with the running run");
            }
            (Err(RunError::ShutDown { .. }), Err(MRunError::ShutDown)) => {}
            (real, model) => panic!(
                "run: repository says {:?}, model says {model:?}",
                real.map(|handle| handle.run_id())
            ),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Listen { key, immediate } => {
                let seen: Recorded = Arc::default();
                let sink = Arc::clone(&seen);
                let subscription = self.repo.listen(
                    key,
                    on_state(move |state: &RealState| {
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(state.clone())
                    }),
                    immediate,
                );
                self.listeners.push((subscription, seen));
                self.model.listen(key, immediate);
            }
            Op::Unsubscribe { pick } => {
                if !self.listeners.is_empty() {
                    let index = pick % self.listeners.len();
                    self.listeners.remove(index).0.unsubscribe();
                    self.model.listeners.remove(index);
                }
            }
            Op::Run {
                key,
                conflict,
                panics_on_start,
            } => {
                let (task, sender) = self.task(panics_on_start);
                let real = self.repo.run_with(key, conflict, task);
                let model = self.model.run_with(key, conflict, panics_on_start);
                self.check_run(real, model, sender);
            }
            Op::TakeNode { key } => {
                let node = self.repo.state_node(key);
                let model = match (&node, self.model.state(key)) {
                    (StateNode::Idle(idle), MState::Idle(last, _)) => {
                        let seen = idle.last_outcome().map(Self::translate_outcome);
                        assert_eq!(seen, last, "an idle node's last outcome");
                        MNode::Idle(key)
                    }
                    (StateNode::Running(running), MState::Running(run, _)) => {
                        assert_eq!(
                            self.run_index(running.run_id()),
                            run,
                            "a running node's run"
                        );
                        MNode::Running(key, run)
                    }
                    (node, state) => panic!("node {node:?}, model state {state:?}"),
                };
                self.nodes.push(node);
                self.model.nodes.push(model);
            }
            Op::UseNode { pick, reason: code } => {
                if self.nodes.is_empty() {
                    return;
                }
                let index = pick % self.nodes.len();
                let node = self.nodes.remove(index);
                let model = self.model.nodes.remove(index);
                match (node, model) {
                    (StateNode::Idle(idle), MNode::Idle(key)) => {
                        let (task, sender) = self.task(false);
                        let real = idle.run(task);
                        let model = self.model.start(key, false);
                        self.check_run(real, model, sender);
                    }
                    (StateNode::Running(running), MNode::Running(_, run)) => {
                        let real = running.stop(reason(code).map(Reason::from));
                        let model = self.model.stop(run, reason(code));
                        match (real, model) {
                            (Ok(()), Ok(())) => {}
                            (Err(error), Err(run)) => {
                                assert_eq!(
                                    error.run_id().map(|id| self.run_index(id)),
                                    Some(run),
                                    "stale run"
                                );
                            }
                            (real, model) => panic!("stop: {real:?}, model {model:?}"),
                        }
                    }
                    (node, model) => panic!("node {node:?} kept as {model:?}"),
                }
            }
            Op::DropNode { pick } => {
                if !self.nodes.is_empty() {
                    let index = pick % self.nodes.len();
                    drop(self.nodes.remove(index));
                    self.model.nodes.remove(index);
                }
            }
            Op::Stop { key, reason: code } => match self.repo.state_node(key) {
                StateNode::Idle(_) => assert_eq!(self.model.running(key), None, "key {key} idle"),
                StateNode::Running(running) => {
                    let run = self.model.running(key).expect("the model runs it too");
                    assert_eq!(self.run_index(running.run_id()), run);
                    running
                        .stop(reason(code).map(Reason::from))
                        .expect("a fresh node stops its run");
                    self.model
                        .stop(run, reason(code))
                        .expect("the model stops it too");
                }
            },
            Op::Emit { pick, ref cmd } => {
                if !self.senders.is_empty() {
                    let run = pick % self.senders.len();
                    // The receiver is gone once the run's stream was dropped.
                    let _ = self.senders[run].unbounded_send(cmd.clone());
                    self.model.emit(run, cmd.clone());
                }
            }
            Op::CloneHandle { pick } => {
                if !self.handles.is_empty() {
                    let index = pick % self.handles.len();
                    self.handles.push(self.handles[index].clone());
                    self.model.handles.push(self.model.handles[index]);
                }
            }
            Op::DropHandle { pick } => {
                if !self.handles.is_empty() {
                    let index = pick % self.handles.len();
                    drop(self.handles.remove(index));
                    self.model.handles.remove(index);
                }
            }
            Op::Drive => {
                self.manual.drive(&mut self.pool);
                self.model.drive();
            }
            Op::Shutdown { reason: code } => {
                self.shutdown = Some(self.repo.shutdown(reason(code).map(Reason::from)));
                self.model.shutdown(reason(code));
            }
        }
        self.model.forget_unheld();
    }

    fn check(&mut self) {
        let model = &self.model;
        for key in 0..KEYS {
            assert_eq!(
                self.translate(&self.repo.state(&key)),
                model.state(key),
                "state of key {key}"
            );
        }
        for (index, ((_, seen), (key, expected))) in
            self.listeners.iter().zip(&model.listeners).enumerate()
        {
            let seen: Vec<MState> = seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|s| self.translate(s))
                .collect();
            assert_eq!(&seen, expected, "listener {index} on key {key}");
        }
        for (handle, &run) in self.handles.iter().zip(&model.handles) {
            let expected = model.runs[run]
                .finished
                .then(|| model.runs[run].outcome.clone());
            let expected = expected.map(|outcome| outcome.expect("a finished run has an outcome"));
            let outcome = handle
                .outcome()
                .map(|outcome| Self::translate_outcome(&outcome));
            assert_eq!(outcome, expected, "outcome of run {run}");
        }
        let remembered = (0..KEYS).filter(|&key| model.remembered(key)).count();
        assert_eq!(self.repo.len(), remembered, "remembered keys");
        assert_eq!(self.repo.is_empty(), remembered == 0);
        assert_eq!(self.repo.live_tasks(), model.live_tasks(), "live tasks");
        assert_eq!(
            self.alive.load(Ordering::SeqCst),
            model.live_streams(),
            "live streams"
        );
        assert_eq!(self.repo.is_shut_down(), model.shut_down);
        if let Some(shutdown) = self.shutdown.as_mut() {
            let mut cx = Context::from_waker(Waker::noop());
            let done = Pin::new(shutdown).poll(&mut cx).is_ready();
            assert_eq!(
                done,
                model.live_tasks() == 0,
                "shutdown resolves once no task is live"
            );
        }
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("KEYRUNNER_PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/model.txt"
        )))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_repository_agrees_with_the_reference_model(ops in proptest::collection::vec(op(), 1..100)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        // Wind down: everything ends, every stream is dropped, every key is forgotten.
        harness.apply(&Op::Shutdown { reason: None });
        harness.apply(&Op::Drive);
        harness.check();
        prop_assert_eq!(harness.repo.live_tasks(), 0);
        prop_assert_eq!(harness.alive.load(Ordering::SeqCst), 0);
        harness.listeners.clear();
        harness.handles.clear();
        harness.nodes.clear();
        prop_assert!(harness.repo.is_empty(), "every key is forgotten at the end");
    }
}
