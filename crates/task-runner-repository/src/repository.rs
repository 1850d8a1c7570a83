//! [`TaskRunnerRepository`], its capability handles, and the typestate nodes.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use futures_core::Stream;
use keyrunner_pub_sub::PubSub;

use crate::abort::AbortSignal;
use crate::error::{RunError, SpawnError, StopError};
use crate::observe::{StateStream, Subscription};
use crate::panics::Deferred;
use crate::run::{Driver, ErasedRun, LiveTasks, Run, RunHandle, Slot};
use crate::shutdown::Shutdown;
use crate::spawn::{DebugSpawn, Spawn};
use crate::state::{Outcome, Reason, RunId, State};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::task::{IntoProgress, TaskContext};

pub(crate) struct Inner<K, S, E, H> {
    pub(crate) topics: PubSub<K, Slot<S, E>, H>,
    spawner: Box<dyn Spawn>,
    next_run: AtomicU64,
    shut_down: AtomicBool,
    pub(crate) live: Arc<LiveTasks>,
}

/// A process-wide repository of task runners, one per key: each key runs at most one task.
///
/// See the [crate docs](crate) for the guarantees. Cloning gives another handle to the same
/// repository; [`observer`](Self::observer) and [`controller`](Self::controller) split its
/// capabilities.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use keyrunner_task_runner_repository::{BoxFuture, Outcome, StateNode, TaskRunnerRepository};
///
/// let agents: TaskRunnerRepository<String, String> =
///     TaskRunnerRepository::new(|future: BoxFuture| {
///         std::thread::spawn(move || futures::executor::block_on(future));
///     });
///
/// let handle = match agents.state_node("chat-1".to_string()) {
///     StateNode::Idle(idle) => idle
///         .run(|_cx| stream::iter(["Hel", "lo"].map(String::from)))
///         .expect("nobody else runs chat-1"),
///     StateNode::Running(_) => unreachable!("a fresh key is idle"),
/// };
/// assert_eq!(handle.await, Outcome::Completed);
/// # });
/// ```
pub struct TaskRunnerRepository<K, S, E = std::convert::Infallible, H = RandomState> {
    inner: Arc<Inner<K, S, E, H>>,
}

/// The read-only capability of a repository: read states, listen, stream. It can never run or
/// stop a task.
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{BoxFuture, TaskRunnerRepository};
/// let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(|f: BoxFuture| drop(f));
/// let observer = repository.observer();
/// observer.state_node(1); // an observer cannot act
/// ```
pub struct Observer<K, S, E = std::convert::Infallible, H = RandomState> {
    inner: Arc<Inner<K, S, E, H>>,
}

/// The control capability of a repository: check a key's node, run and stop tasks, shut down.
pub struct Controller<K, S, E = std::convert::Infallible, H = RandomState> {
    inner: Arc<Inner<K, S, E, H>>,
}

/// What to do when [`run_with`](TaskRunnerRepository::run_with) finds the key running.
///
/// Named after the workflow-id conflict policies of durable-execution engines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Conflict {
    /// Refuse with [`RunError::Busy`], handing the task back (the same as a lost `run`).
    #[default]
    Reject,
    /// Hand back a handle to the run already going on; the new task is dropped unused.
    UseExisting,
    /// Stop the running task with [`Reason::superseded`], then run the new one.
    Replace,
}

/// A key's state at one instant, as a capability to act: run an idle key, stop a running one.
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{BoxFuture, StateNode, TaskRunnerRepository};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(|f: BoxFuture| drop(f));
/// if let StateNode::Idle(idle) = repository.state_node(1) {
///     idle.stop(None); // there is nothing to stop on an idle node
/// }
/// ```
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{BoxFuture, StateNode, TaskRunnerRepository};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(|f: BoxFuture| drop(f));
/// if let StateNode::Running(running) = repository.state_node(1) {
///     running.run(|_| futures::stream::empty()); // a running key cannot start another task
/// }
/// ```
#[derive(Debug)]
pub enum StateNode<K, S, E = std::convert::Infallible, H = RandomState> {
    /// The key was idle.
    Idle(IdleNode<K, S, E, H>),
    /// The key was running.
    Running(RunningNode<K, S, E, H>),
}

/// A key seen idle: [`run`](Self::run) starts a task if it still is.
///
/// `run` consumes the node, so a node acts at most once:
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{BoxFuture, StateNode, TaskRunnerRepository};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(|f: BoxFuture| drop(f));
/// if let StateNode::Idle(idle) = repository.state_node(1) {
///     let _first = idle.run(|_| futures::stream::empty());
///     let _second = idle.run(|_| futures::stream::empty()); // use of moved value
/// }
/// ```
pub struct IdleNode<K, S, E = std::convert::Infallible, H = RandomState> {
    inner: Arc<Inner<K, S, E, H>>,
    key: K,
    last: Option<Outcome<E>>,
}

/// A key seen running one particular run: [`stop`](Self::stop) stops that run, never a later one.
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{BoxFuture, StateNode, TaskRunnerRepository};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(|f: BoxFuture| drop(f));
/// if let StateNode::Running(running) = repository.state_node(1) {
///     let _ = running.stop(None);
///     let _ = running.stop(None); // use of moved value
/// }
/// ```
pub struct RunningNode<K, S, E = std::convert::Infallible, H = RandomState> {
    key: K,
    // The run acts through its own lease on the key: the node needs no repository handle.
    run: Arc<dyn ErasedRun<E>>,
    types: PhantomData<fn() -> (S, H)>,
}

impl<K, S, E> TaskRunnerRepository<K, S, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A repository that drives every run through `spawner`.
    pub fn new(spawner: impl Spawn) -> Self {
        Self::with_hasher(spawner, RandomState::new())
    }
}

impl<K, S, E, H> TaskRunnerRepository<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Clone + Send + Sync + 'static,
{
    /// A repository that hashes keys with `hasher`.
    pub fn with_hasher(spawner: impl Spawn, hasher: H) -> Self {
        let topics = PubSub::builder()
            .shared_initial_value(Slot::idle(None))
            // A running key publishes one state per item: reuse the retired states' memory.
            .reuse_values()
            // An idle key nobody holds is forgotten; a running key is held by its driver anyway.
            .should_cleanup(|_: &K, slot: &Slot<S, E>| slot.state.is_idle())
            .hasher(hasher)
            .build();
        Self {
            inner: Arc::new(Inner {
                topics,
                spawner: Box::new(spawner),
                next_run: AtomicU64::new(1),
                shut_down: AtomicBool::new(false),
                live: Arc::new(LiveTasks::default()),
            }),
        }
    }
}

impl<K, S, E, H> TaskRunnerRepository<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    /// The read-only capability: states, listeners, streams.
    #[must_use]
    pub fn observer(&self) -> Observer<K, S, E, H> {
        Observer {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The control capability: nodes, runs, stops, shutdown.
    #[must_use]
    pub fn controller(&self) -> Controller<K, S, E, H> {
        Controller {
            inner: Arc::clone(&self.inner),
        }
    }
}

macro_rules! observer_methods {
    () => {
        /// A snapshot of `key`'s state (an unknown key is idle with no last outcome).
        #[must_use]
        pub fn state(&self, key: &K) -> State<S, E>
        where
            S: Clone,
        {
            self.inner.state(key)
        }

        /// Whether `key` runs a task now.
        #[must_use]
        pub fn is_running(&self, key: &K) -> bool {
            self.inner.is_running(key)
        }

        /// Calls `listener` with every state `key` takes from now on, in order; with
        /// `immediate`, first with its current state.
        ///
        /// The listener runs on the thread that made the transition, with no lock held: it may
        /// call back into the repository (read, listen, run, stop) without deadlock. Holding the
        /// subscription keeps the key's last outcome remembered.
        ///
        /// One thing a listener must not do is drop the subscription or stream of *another* key
        /// while that key may be delivering on another thread: unsubscribing waits for a
        /// delivery in flight, so two keys doing this to each other wait forever.
        ///
        /// A listener that panics does not stop the others or the run; the panic resurfaces
        /// from the call that made the transition once the repository has finished its step
        /// (see the crate docs, "Panics").
        pub fn listen<F>(&self, key: K, listener: F, immediate: bool) -> Subscription<K, S, E, H>
        where
            F: Fn(&State<S, E>) + Send + Sync + 'static,
        {
            self.inner.listen(key, listener, immediate)
        }

        /// A stream of `key`'s states: its current state first, then every transition in
        /// order (see [`StateStream`] for how a slow consumer is treated).
        pub fn stream(&self, key: K) -> StateStream<S, E>
        where
            S: Clone,
        {
            StateStream::new(&self.inner, key)
        }

        /// The keys running a task now.
        #[must_use]
        pub fn running_keys(&self) -> Vec<K> {
            self.inner.running_keys()
        }

        /// How many keys the repository remembers now: running, listened to, or held by a
        /// handle.
        #[must_use]
        pub fn len(&self) -> usize {
            self.inner.topics.len()
        }

        /// Whether the repository remembers no key at all.
        #[must_use]
        pub fn is_empty(&self) -> bool {
            self.inner.topics.is_empty()
        }

        /// How many task streams are alive now (stopped runs count until their stream is
        /// dropped).
        #[must_use]
        pub fn live_tasks(&self) -> usize {
            self.inner.live.get()
        }

        /// Returns spare memory of the key table to the allocator.
        pub fn shrink_to_fit(&self) {
            self.inner.topics.shrink_to_fit();
        }
    };
}

macro_rules! controller_methods {
    () => {
        /// `key`'s state at this instant, as a node that can act: run if idle, stop if running.
        #[must_use]
        pub fn state_node(&self, key: K) -> StateNode<K, S, E, H> {
            self.inner.state_node(key)
        }

        /// Runs `task` on `key` if it is idle; otherwise refuses with [`RunError::Busy`].
        ///
        /// The same as [`run_with`](Self::run_with) and [`Conflict::Reject`].
        pub fn run<F, St, M>(&self, key: K, task: F) -> Result<RunHandle<E>, RunError<F>>
        where
            F: FnOnce(TaskContext<K>) -> St + Send + 'static,
            St: Stream + Send + 'static,
            St::Item: IntoProgress<S, E, M>,
            M: 'static,
        {
            self.run_with(key, Conflict::Reject, task)
        }

        /// Runs `task` on `key`, resolving a running key by `conflict`.
        pub fn run_with<F, St, M>(
            &self,
            key: K,
            conflict: Conflict,
            mut task: F,
        ) -> Result<RunHandle<E>, RunError<F>>
        where
            F: FnOnce(TaskContext<K>) -> St + Send + 'static,
            St: Stream + Send + 'static,
            St::Item: IntoProgress<S, E, M>,
            M: 'static,
        {
            // Stopping the old run may panic (a listener, an abort callback): the replacement
            // still starts, and the panic resumes afterwards.
            let mut panic = $crate::panics::Deferred::default();
            let result = loop {
                match (self.inner.state_node(key.clone()), conflict) {
                    (StateNode::Idle(idle), _) => match idle.run(task) {
                        // Lost a race to another run: look again.
                        Err(RunError::Busy { task: back, .. }) if conflict != Conflict::Reject => {
                            task = back;
                        }
                        result => break result,
                    },
                    (StateNode::Running(running), Conflict::Reject) => {
                        break Err(RunError::Busy {
                            task,
                            running: running.run_id(),
                        });
                    }
                    (StateNode::Running(running), Conflict::UseExisting) => {
                        break Ok(running.handle());
                    }
                    (StateNode::Running(running), Conflict::Replace) => {
                        // A stale node means the run ended meanwhile: look again either way.
                        panic.catch(|| running.stop(Reason::superseded()));
                    }
                }
            };
            panic.resume();
            result
        }

        /// Stops every running task with `reason` and refuses runs from now on; the returned
        /// future resolves once every task stream has been dropped.
        pub fn shutdown(&self, reason: impl Into<Option<Reason>>) -> Shutdown {
            self.inner.shutdown(reason.into())
        }

        /// Whether [`shutdown`](Self::shutdown) has been called.
        #[must_use]
        pub fn is_shut_down(&self) -> bool {
            self.inner.shut_down.load(Ordering::SeqCst)
        }
    };
}

impl<K, S, E, H> TaskRunnerRepository<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    observer_methods!();
    controller_methods!();
}

impl<K, S, E, H> Observer<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    observer_methods!();
}

impl<K, S, E, H> Controller<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    controller_methods!();
}

impl<K, S, E, H> Inner<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    fn state(&self, key: &K) -> State<S, E>
    where
        S: Clone,
    {
        self.topics
            .last(key)
            .map_or_else(State::default, |slot| slot.state.clone())
    }

    fn is_running(&self, key: &K) -> bool {
        self.topics
            .last(key)
            .is_some_and(|slot| slot.state.is_running())
    }

    pub(crate) fn listen<F>(&self, key: K, listener: F, immediate: bool) -> Subscription<K, S, E, H>
    where
        F: Fn(&State<S, E>) + Send + Sync + 'static,
    {
        Subscription::new(self.topics.listen(
            key,
            move |slot: &Slot<S, E>| listener(&slot.state),
            immediate,
        ))
    }

    fn running_keys(&self) -> Vec<K> {
        self.topics
            .entries()
            .into_iter()
            .filter(|(_, slot)| slot.as_ref().is_some_and(|slot| slot.state.is_running()))
            .map(|(key, _)| key)
            .collect()
    }

    fn state_node(self: &Arc<Self>, key: K) -> StateNode<K, S, E, H> {
        let slot = self.topics.last(&key);
        match slot.as_deref() {
            Some(Slot {
                run: Some(run),
                state: State::Running { .. },
            }) => StateNode::Running(RunningNode {
                key,
                run: Arc::clone(run),
                types: PhantomData,
            }),
            other => StateNode::Idle(IdleNode {
                inner: Arc::clone(self),
                key,
                last: other.and_then(|slot| slot.state.last_outcome().cloned()),
            }),
        }
    }

    /// The one way a run starts: a compare-and-set from idle to running on the key's subject.
    fn start<F, St, M>(
        self: &Arc<Self>,
        key: K,
        task: F,
        link: Option<&AbortSignal>,
    ) -> Result<RunHandle<E>, RunError<F>>
    where
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<S, E, M>,
        M: 'static,
    {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(RunError::ShutDown { task });
        }
        // Counted before the compare-and-set, so a shutdown's `Shutdown` future also waits for a
        // start that is still deciding; the token uncounts it should the start unwind.
        let live = self.live.enter();
        let topic = self.topics.subject(key.clone());
        let run = Arc::new(Run::new(topic));
        let erased: Arc<dyn ErasedRun<E>> = run.clone();
        let mut busy = None;
        let mut refused = false;
        let mut started = false;
        let mut panic = Deferred::default();
        panic.catch(|| {
            run.topic.update(|slot| {
                // Read under the key's lock, which orders it against `shutdown`: either shutdown
                // sees this run running and stops it, or this sees the flag (its store precedes
                // shutdown's visit to this key, or to the key table if this key was not there).
                if self.shut_down.load(Ordering::SeqCst) {
                    refused = true;
                    return None;
                }
                if let Some(running) = slot.and_then(Slot::running_id) {
                    busy = Some(running);
                    return None;
                }
                started = true;
                // Under the key's lock: the runs of one key get increasing ids in start order.
                let id = RunId(self.next_run.fetch_add(1, Ordering::Relaxed));
                run.core.set_id(id);
                Some(Slot {
                    state: State::Running {
                        run: id,
                        progress: None,
                    },
                    run: Some(erased),
                })
            })
        });
        let id = run.core.id();
        if !started {
            drop(live);
            panic.resume();
            return Err(match (refused, busy) {
                (false, Some(running)) => RunError::Busy { task, running },
                // Refused for shutdown (the closure declines only for that or a running key).
                _ => RunError::ShutDown { task },
            });
        }
        // A signal that has fired already runs the callback here, stopping the run before its
        // driver exists; a listener's panic in that stop is held until the driver is spawned.
        let link = link.and_then(|signal| {
            let run: Weak<dyn ErasedRun<E>> = Arc::downgrade(&run) as Weak<dyn ErasedRun<E>>;
            panic.catch(|| {
                signal.on_abort(move |reason| {
                    if let Some(run) = run.upgrade() {
                        // Stale is fine: the run ended before the linked signal fired.
                        let _ = stop(&*run, reason.cloned());
                    }
                })
            })
        });
        let driver: Driver<K, S, E, H, F, St, M> = Driver::new(Arc::clone(&run), task, live, link);
        // The key is running now: even if a listener panicked above, the run needs its driver.
        panic.catch(|| self.spawner.spawn(Box::pin(driver)));
        let result = if run.core.was_refused() {
            Err(RunError::Spawn(SpawnError { run: id }))
        } else {
            Ok(RunHandle::new(run))
        };
        panic.resume();
        result
    }

    fn shutdown(&self, reason: Option<Reason>) -> Shutdown {
        self.shut_down.store(true, Ordering::SeqCst);
        // Every run is stopped even if a listener or an abort callback panics on the way; the
        // first panic resumes once they all are.
        let mut panic = Deferred::default();
        for (_, slot) in self.topics.entries() {
            if let Some(run) = slot.as_deref().and_then(|slot| slot.run.as_ref()) {
                // Stale is fine: the run ended by itself meanwhile.
                panic.catch(|| stop(&**run, reason.clone()));
            }
        }
        let shutdown = Shutdown::new(Arc::clone(&self.live));
        panic.resume();
        shutdown
    }
}

/// The one way a run is stopped: the run's own compare-and-set from "running this run" to
/// idle, then its signal fires and its driver wakes to drop the stream.
fn stop<E>(run: &dyn ErasedRun<E>, reason: Option<Reason>) -> Result<(), StopError> {
    let mut panic = Deferred::default();
    // A listener's panic can only come after the transition: it happened.
    let stopped = panic
        .catch(|| run.stop_transition(reason.clone()))
        .unwrap_or(true);
    if stopped {
        // The key is idle now: even if a listener panicked, the signal must fire and the driver
        // must drop the stream.
        panic.catch(|| run.core().abort(reason));
    }
    panic.resume();
    if stopped {
        Ok(())
    } else {
        Err(StopError {
            run: run.core().id(),
        })
    }
}

impl<K, S, E, H> IdleNode<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    /// Starts `task` if the key is still idle at this instant.
    ///
    /// Of two racing runs on one key exactly one succeeds; the other gets [`RunError::Busy`]
    /// with its task back. The task is called on the executor with a [`TaskContext`]; its
    /// stream may yield plain progress `S` or `Result<S, E>`.
    pub fn run<F, St, M>(self, task: F) -> Result<RunHandle<E>, RunError<F>>
    where
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<S, E, M>,
        M: 'static,
    {
        self.inner.start(self.key, task, None)
    }

    /// Like [`run`](Self::run), and the run is also stopped (with the signal's reason) when
    /// `signal` fires — one controller can stop many runs. The link is one-way: the run's own
    /// end never fires `signal`, and it is removed from `signal` when the run ends.
    pub fn run_linked<F, St, M>(
        self,
        task: F,
        signal: &AbortSignal,
    ) -> Result<RunHandle<E>, RunError<F>>
    where
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<S, E, M>,
        M: 'static,
    {
        self.inner.start(self.key, task, Some(signal))
    }
}

impl<K, S, E, H> IdleNode<K, S, E, H> {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// How the key's last run ended, when the node was taken (if remembered).
    #[must_use]
    pub fn last_outcome(&self) -> Option<&Outcome<E>> {
        self.last.as_ref()
    }
}

impl<K, S, E, H> RunningNode<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    /// Stops the run this node saw: the key is idle at once, the run's signal fires (once), and
    /// the task's stream is dropped promptly on its executor. To wait for that drop, take a
    /// [`handle`](Self::handle) first and await it.
    ///
    /// If that run has already ended — even if a later run now holds the key — nothing changes
    /// and [`StopError`] is returned.
    pub fn stop(self, reason: impl Into<Option<Reason>>) -> Result<(), StopError> {
        stop(&*self.run, reason.into())
    }
}

impl<K, S, E, H> RunningNode<K, S, E, H> {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The run this node saw.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run.core().id()
    }

    /// A handle to the run this node saw.
    pub fn handle(&self) -> RunHandle<E> {
        RunHandle::new(Arc::clone(&self.run))
    }

    /// The signal of the run this node saw.
    #[must_use]
    pub fn abort_signal(&self) -> AbortSignal {
        self.run.core().abort.signal()
    }
}

impl<K, S, E, H> StateNode<K, S, E, H> {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        match self {
            Self::Idle(node) => node.key(),
            Self::Running(node) => node.key(),
        }
    }

    /// Whether the key was idle.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self, Self::Idle(_))
    }

    /// Whether the key was running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running(_))
    }
}

impl<K, S, E, H> Clone for TaskRunnerRepository<K, S, E, H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, S, E, H> Clone for Observer<K, S, E, H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, S, E, H> Clone for Controller<K, S, E, H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, S, E, H> fmt::Debug for Inner<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRunnerRepository")
            // The key table's own Debug never waits for its lock.
            .field("keys", &self.topics)
            .field("live_tasks", &self.live.get())
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .field("spawner", &DebugSpawn)
            .finish_non_exhaustive()
    }
}

impl<K, S, E, H> fmt::Debug for TaskRunnerRepository<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<K, S, E, H> fmt::Debug for Observer<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Observer").field(&self.inner).finish()
    }
}

impl<K, S, E, H> fmt::Debug for Controller<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Controller").field(&self.inner).finish()
    }
}

impl<K: fmt::Debug, S, E: fmt::Debug, H> fmt::Debug for IdleNode<K, S, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleNode")
            .field("key", &self.key)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Debug, S, E, H> fmt::Debug for RunningNode<K, S, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningNode")
            .field("key", &self.key)
            .field("run", &self.run.core().id())
            .finish_non_exhaustive()
    }
}
