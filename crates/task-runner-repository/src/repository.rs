//! The handles of a repository: [`TaskRunnerRepository`] (the owner, with its [`Builder`]),
//! [`Controller`] (acts) and [`Observer`] (reads and listens).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

use crate::abort::AbortSignal;
use crate::bounds::{Error, Key, Value};
use crate::error::{RunError, StopError};
use crate::event::{Event, Position};
use crate::handle::RunHandle;
use crate::inner::{Inner, Shared};
use crate::item::IntoProgress;
use crate::node::{StateNode, start};
use crate::observe::{EventStream, Subscription, listener as wrap};
use crate::panics::Deferred;
use crate::retention::{Clock, Retention, SystemClock};
use crate::shutdown::Shutdown;
use crate::spawn::Spawn;
use crate::state::{NoError, Reason, RunId, State};
use crate::sync::Ordering;
use crate::task::TaskContext;

/// How many deltas of a run are kept by default (see [`Builder::max_deltas`]).
pub const DEFAULT_MAX_DELTAS: usize = 1024;

/// A counted user handle: the last one to be dropped shuts the repository down.
struct Handle<K, P, E> {
    shared: Arc<dyn Shared<K, P, E>>,
}

impl<K, P, E> Handle<K, P, E> {
    fn new(shared: Arc<dyn Shared<K, P, E>>) -> Self {
        shared.common().handles.fetch_add(1, Ordering::Relaxed);
        Self { shared }
    }
}

impl<K, P, E> Clone for Handle<K, P, E> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.shared))
    }
}

impl<K, P, E> Drop for Handle<K, P, E> {
    fn drop(&mut self) {
        if self.shared.common().handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Nobody can ask for anything any more: stop every run, end every stream, and let
            // the drivers finish on their executors. Nobody waits for that here.
            drop(self.shared.shutdown(None));
        }
    }
}

/// A process-wide repository of task runners, one per key: each key runs at most one task.
///
/// `K` is the key (`Eq + Hash + Clone + Send + Sync + 'static`), `P` the tasks' progress and
/// `E` their error (`Send + Sync + 'static`; `E` defaults to [`NoError`]), `H` the hasher.
/// See the [crate docs](crate) for the guarantees.
///
/// Cloning gives another handle to the same repository; [`observer`](Self::observer) and
/// [`controller`](Self::controller) split its capabilities and name no hasher. Dropping the
/// last of these handles shuts the repository down ([`shutdown`](Self::shutdown), reason
/// `None`), without waiting.
///
/// # Handles the repository holds
///
/// Every handle counts, including those the repository itself keeps alive: one held by a task
/// (until the task's stream is dropped), by a run's abort callback (until the run ends), by a
/// listener (until its subscription is dropped), or by a progress value or an error (while its
/// key remembers it). While such a handle lives, dropping all the others does not shut the
/// repository down — so a task that holds a controller and waits for its abort signal keeps
/// both itself and the repository alive for good — and a key whose own state holds a handle, or
/// a [`RunHandle`] of its own runs, is never forgotten. To let a task act on the repository
/// without keeping it, hand it a [`Weak`](std::sync::Weak) of an `Arc`'d controller that you
/// hold:
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
///
/// use futures::stream;
/// use keyrunner_task_runner_repository::{TaskRunnerRepository, spawn_fn};
///
/// let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(|driver| {
///     std::thread::spawn(move || futures::executor::block_on(driver));
/// }));
/// let controller = Arc::new(repository.controller());
/// drop(repository);
/// let weak = Arc::downgrade(&controller);
/// let handle = controller
///     .run(1, move |_| {
///         // Upgraded only while it acts, e.g. to start a follow-up run on another key.
///         let _follow_up = weak.upgrade().map(|controller| controller.is_running(&2));
///         stream::pending::<u32>()
///     })
///     .unwrap();
/// drop(controller); // the last handle: the repository shuts down and stops the run
/// assert!(handle.await.is_stopped());
/// # });
/// ```
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use keyrunner_task_runner_repository::{Outcome, StateNode, TaskRunnerRepository, spawn_fn};
///
/// let agents: TaskRunnerRepository<String, String> =
///     TaskRunnerRepository::new(spawn_fn(|driver| {
///         std::thread::spawn(move || futures::executor::block_on(driver));
///     }));
///
/// let handle = match agents.state_node("chat-1".to_string()) {
///     StateNode::Idle(idle) => idle
///         .run(|_cx| stream::iter(["Hel", "Hello"].map(String::from)))
///         .expect("nobody else runs chat-1"),
///     StateNode::Running(_) => unreachable!("a fresh key is idle"),
/// };
/// assert_eq!(handle.await, Outcome::Completed);
/// # });
/// ```
pub struct TaskRunnerRepository<K, P, E = NoError, H = RandomState> {
    handle: Handle<K, P, E>,
    hasher: PhantomData<fn() -> H>,
}

/// The read-only capability of a repository: read states, listen, stream. It can never run or
/// stop a task.
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{TaskRunnerRepository, spawn_fn};
/// let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(drop));
/// let observer = repository.observer();
/// observer.state_node(1); // an observer cannot act
/// ```
///
/// ```
/// use keyrunner_task_runner_repository::{State, TaskRunnerRepository, spawn_fn};
///
/// let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(drop));
/// let observer = repository.observer();
/// assert_eq!(observer.state(&1), State::default());
/// ```
pub struct Observer<K, P, E = NoError> {
    handle: Handle<K, P, E>,
}

/// The control capability of a repository: everything an [`Observer`] does, and act: take a
/// key's node, run and stop tasks, shut down.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use keyrunner_task_runner_repository::{Reason, TaskRunnerRepository, spawn_fn};
///
/// let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(|driver| {
///     std::thread::spawn(move || futures::executor::block_on(driver));
/// }));
/// let controller = repository.controller();
/// let handle = controller.run(1, |_| stream::pending::<u32>()).unwrap();
/// assert_eq!(controller.stop(&1, Reason::from("user")), Ok(handle.run_id()));
/// assert!(handle.await.is_stopped());
/// # });
/// ```
pub struct Controller<K, P, E = NoError> {
    handle: Handle<K, P, E>,
}

/// What to do when [`run_with`](Controller::run_with) finds the key running.
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

/// Configures a [`TaskRunnerRepository`]: hasher, retention of idle keys, bound on deltas.
///
/// ```
/// use std::time::Duration;
///
/// use keyrunner_task_runner_repository::{TaskRunnerRepository, spawn_fn};
///
/// let repository: TaskRunnerRepository<String, String> =
///     TaskRunnerRepository::builder(spawn_fn(|driver| {
///         std::thread::spawn(move || futures::executor::block_on(driver));
///     }))
///     // Keep a finished reply for a minute, for up to 10,000 conversations.
///     .retain_for(Duration::from_secs(60))
///     .retain_keys(10_000)
///     .max_deltas(4096)
///     .build();
/// # drop(repository);
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, P, E = NoError, H = RandomState> {
    spawner: Box<dyn Spawn>,
    hasher: H,
    retain_for: Option<Duration>,
    retain_keys: Option<usize>,
    clock: Option<Box<dyn Clock>>,
    max_deltas: usize,
    types: PhantomData<Types<K, P, E>>,
}

/// The builder's type parameters, held by nothing (and `Send + Sync` whatever they are).
type Types<K, P, E> = fn() -> (K, P, E);

impl<K: Key, P: Value, E: Value> TaskRunnerRepository<K, P, E> {
    /// A repository that drives every run through `spawner`, forgets idle keys nobody holds, and
    /// keeps up to [`DEFAULT_MAX_DELTAS`] deltas per run.
    pub fn new(spawner: impl Spawn) -> Self {
        Self::builder(spawner).build()
    }

    /// A [`Builder`] to choose the hasher, retention and the bound on deltas.
    pub fn builder(spawner: impl Spawn) -> Builder<K, P, E> {
        Builder {
            spawner: Box::new(spawner),
            hasher: RandomState::new(),
            retain_for: None,
            retain_keys: None,
            clock: None,
            max_deltas: DEFAULT_MAX_DELTAS,
            types: PhantomData,
        }
    }
}

impl<K, P, E, H> Builder<K, P, E, H> {
    /// Hashes keys with `hasher`, like [`HashMap::with_hasher`](std::collections::HashMap).
    pub fn hasher<H2>(self, hasher: H2) -> Builder<K, P, E, H2> {
        Builder {
            spawner: self.spawner,
            hasher,
            retain_for: self.retain_for,
            retain_keys: self.retain_keys,
            clock: self.clock,
            max_deltas: self.max_deltas,
            types: PhantomData,
        }
    }

    /// Keeps an idle key's last outcome and final progress for `duration` after its run ended,
    /// even when nobody holds the key. Reading the key does not extend it. Off by default.
    ///
    /// A retained key counts in [`len`](TaskRunnerRepository::len) and
    /// [`is_allocated`](TaskRunnerRepository::is_allocated). Expired keys are let go at the next
    /// call that reads keys or starts a run.
    pub fn retain_for(mut self, duration: Duration) -> Self {
        self.retain_for = Some(duration);
        self
    }

    /// Keeps the last outcome and final progress of up to `keys` idle keys, even when nobody
    /// holds them; past that, the key whose run ended first is let go. Off by default; with
    /// [`retain_for`](Self::retain_for), both bounds apply.
    pub fn retain_keys(mut self, keys: usize) -> Self {
        self.retain_keys = Some(keys);
        self
    }

    /// Measures retention with `clock` instead of the [`SystemClock`]: for tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Keeps at most `deltas` deltas per run for slow watchers (default
    /// [`DEFAULT_MAX_DELTAS`]); past it, the older ones are folded into the progress, and a
    /// watcher further behind gets one resync (see [`EventStream`]). At least 2.
    pub fn max_deltas(mut self, deltas: usize) -> Self {
        self.max_deltas = deltas.max(2);
        self
    }
}

impl<K, P, E, H> Builder<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Clone + Send + Sync + 'static,
{
    /// Builds the repository.
    pub fn build(self) -> TaskRunnerRepository<K, P, E, H> {
        let retention = (self.retain_for.is_some() || self.retain_keys.is_some()).then(|| {
            Retention::new(
                self.retain_for,
                self.retain_keys,
                self.clock.unwrap_or_else(|| Box::new(SystemClock)),
                self.hasher.clone(),
            )
        });
        let inner: Arc<dyn Shared<K, P, E>> = Arc::new(Inner::new(
            self.spawner,
            self.hasher,
            self.max_deltas,
            retention,
        ));
        TaskRunnerRepository {
            handle: Handle::new(inner),
            hasher: PhantomData,
        }
    }
}

macro_rules! observer_methods {
    () => {
        /// A snapshot of `key`'s state, with the accumulated progress (an unknown key is idle
        /// with no last outcome).
        #[must_use]
        pub fn state(&self, key: &K) -> State<P, E> {
            self.handle.shared.state(key)
        }

        /// Whether `key` runs a task now.
        #[must_use]
        pub fn is_running(&self, key: &K) -> bool {
            self.handle
                .shared
                .last(key)
                .is_some_and(|slot| slot.run.is_some())
        }

        /// Whether the repository remembers `key` now: it runs, or someone listens to it,
        /// streams it or holds a handle of its run, or it is retained.
        #[must_use]
        pub fn is_allocated(&self, key: &K) -> bool {
            self.handle.shared.is_allocated(key)
        }

        /// Calls `listener` with every event of `key` from now on, in order; with
        /// `immediate`, first with a `State` event of its current state (with the accumulated
        /// progress).
        ///
        /// The listener runs on the thread that made the change, with no lock held: it may
        /// call back into the repository (read, listen, run, stop) without deadlock. It is
        /// called with every delta (a listener cannot fall behind). Holding the subscription
        /// keeps the key remembered.
        ///
        /// It may also drop subscriptions and streams, of its own key or any other: from inside
        /// a listener, unsubscribing never waits for a delivery in flight on another thread.
        ///
        /// A listener that panics does not stop the others or the run; the panic resurfaces
        /// from the call that made the change once the repository has finished its step (see
        /// the crate docs, "Panics").
        pub fn listen<F>(&self, key: K, listener: F, immediate: bool) -> Subscription
        where
            F: Fn(&Event<P, E>) + Send + Sync + 'static,
        {
            Subscription::new(
                self.handle
                    .shared
                    .listen(key, wrap(listener, immediate), immediate),
            )
        }

        /// A stream of `key`'s events: a `State` event with its current state first, then
        /// every event in order (see [`EventStream`] for slow consumers and for the end).
        pub fn stream(&self, key: K) -> EventStream<P, E> {
            self.stream_from(key, None)
        }

        /// A stream of `key`'s events after `position` — the last position a consumer saw,
        /// say a Server-Sent Events `Last-Event-ID` after a reconnect.
        ///
        /// Nothing is repeated and nothing is skipped: if `position` is the key's current
        /// position, the stream starts with the next event; if it is in the current run and
        /// the deltas after it are still held, it starts with those; otherwise it starts with
        /// a `State` event of the current state (a resync).
        pub fn stream_after(&self, key: K, position: Position) -> EventStream<P, E> {
            self.stream_from(key, Some(position))
        }

        fn stream_from(&self, key: K, resume: Option<Position>) -> EventStream<P, E> {
            let shared = &self.handle.shared;
            EventStream::new(
                |listener| shared.watch(key, listener),
                shared.common().shutdown_signal(),
                resume,
            )
        }

        /// The keys running a task now.
        #[must_use]
        pub fn running_keys(&self) -> Vec<K> {
            self.handle.shared.running_keys()
        }

        /// How many keys the repository remembers now: running, listened to, streamed, held by
        /// a handle, or retained.
        #[must_use]
        pub fn len(&self) -> usize {
            self.handle.shared.len()
        }

        /// Whether the repository remembers no key at all.
        #[must_use]
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// How many task streams are alive now (stopped runs count until their stream is
        /// dropped).
        #[must_use]
        pub fn live_tasks(&self) -> usize {
            self.handle.shared.common().live.get()
        }

        /// Whether the repository is shutting down or has shut down.
        #[must_use]
        pub fn is_shut_down(&self) -> bool {
            self.handle.shared.common().is_shut_down()
        }

        /// A signal that fires when the repository shuts down (by
        /// [`shutdown`](Controller::shutdown) or because its last handle was dropped), once
        /// every run has been asked to stop; its reason is the shutdown's. Await
        /// [`aborted`](AbortSignal::aborted) to wait for the shutdown to begin.
        #[must_use]
        pub fn shutdown_signal(&self) -> AbortSignal {
            self.handle.shared.common().shutdown_signal()
        }
    };
}

macro_rules! controller_methods {
    () => {
        /// `key`'s state at this instant, as a node that can act: run if idle, stop if running.
        #[must_use]
        pub fn state_node(&self, key: K) -> StateNode<K, P, E> {
            StateNode::of(&self.handle.shared, key)
        }

        /// Runs `task` on `key` if it is idle; otherwise refuses with [`RunError::Busy`].
        ///
        /// The same as [`run_with`](Self::run_with) and [`Conflict::Reject`].
        pub fn run<F, St, M>(&self, key: K, task: F) -> Result<RunHandle<E>, RunError<F>>
        where
            K: Key,
            E: Error,
            F: FnOnce(TaskContext<K>) -> St + Send + 'static,
            St: Stream + Send + 'static,
            St::Item: IntoProgress<P, E, M>,
            M: 'static,
        {
            start(&self.handle.shared, key, task, None)
        }

        /// Runs `task` on `key`, resolving a running key by `conflict`.
        ///
        /// # Panics
        ///
        /// With [`Conflict::Replace`], a panic while stopping the old run (a listener, an abort
        /// callback) resumes from here once the new run has started.
        pub fn run_with<F, St, M>(
            &self,
            key: K,
            conflict: Conflict,
            mut task: F,
        ) -> Result<RunHandle<E>, RunError<F>>
        where
            K: Key,
            E: Error,
            F: FnOnce(TaskContext<K>) -> St + Send + 'static,
            St: Stream + Send + 'static,
            St::Item: IntoProgress<P, E, M>,
            M: 'static,
        {
            let shared = &self.handle.shared;
            let mut panic = Deferred::default();
            let result = loop {
                match (StateNode::of(shared, key.clone()), conflict) {
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
                        // Stopping the old run may panic (a listener, an abort callback): the
                        // replacement still starts, and the panic resumes afterwards. A stale
                        // node means the run ended meanwhile: look again either way.
                        panic.catch(|| running.stop(Reason::superseded()));
                    }
                }
            };
            panic.resume();
            result
        }

        /// Stops the run `key` runs at this instant, whichever it is, and returns its id: the
        /// key is idle at once, the run's signal fires, and its stream is dropped promptly.
        /// [`StopError::Idle`] if the key runs nothing.
        ///
        /// # Panics
        ///
        /// A listener's or an abort callback's panic resumes from here, once the run is stopped.
        pub fn stop(&self, key: &K, reason: impl Into<Option<Reason>>) -> Result<RunId, StopError>
        where
            K: Key,
        {
            let reason = reason.into();
            loop {
                match self.state_node(key.clone()) {
                    StateNode::Idle(_) => return Err(StopError::Idle),
                    StateNode::Running(running) => {
                        let run = running.run_id();
                        // Stale means that run ended meanwhile: look again.
                        if running.stop(reason.clone()).is_ok() {
                            return Ok(run);
                        }
                    }
                }
            }
        }

        /// Shuts the repository down: refuses runs from this instant (with
        /// [`RunError::ShutDown`]), stops every run with `reason`, then fires the
        /// [`shutdown_signal`](Self::shutdown_signal). The returned future resolves once every
        /// task stream has been dropped.
        ///
        /// Listeners stay registered: each running key's listeners get its final `Idle` state
        /// (stopped with `reason`), and nothing after it. Every [`EventStream`] yields its
        /// key's final state, then ends — streams opened later too.
        pub fn shutdown(&self, reason: impl Into<Option<Reason>>) -> Shutdown {
            self.handle.shared.shutdown(reason.into())
        }
    };
}

impl<K, P: Value, E: Value, H> TaskRunnerRepository<K, P, E, H> {
    observer_methods!();
    controller_methods!();

    /// The read-only capability: states, listeners, streams.
    #[must_use]
    pub fn observer(&self) -> Observer<K, P, E> {
        Observer {
            handle: self.handle.clone(),
        }
    }

    /// The control capability: everything an observer does, plus nodes, runs, stops and
    /// shutdown.
    #[must_use]
    pub fn controller(&self) -> Controller<K, P, E> {
        Controller {
            handle: self.handle.clone(),
        }
    }

    /// Returns spare memory to the allocator: the key table's, the retained keys' (see
    /// [`Builder::retain_for`]), and that of the list through which a shutdown ends the streams,
    /// each of which grows to the most keys or streams there were at once.
    pub fn shrink_to_fit(&self) {
        self.handle.shared.shrink_to_fit();
    }
}

impl<K, P: Value, E: Value> Controller<K, P, E> {
    observer_methods!();
    controller_methods!();

    /// The read-only capability of the same repository.
    #[must_use]
    pub fn observer(&self) -> Observer<K, P, E> {
        Observer {
            handle: self.handle.clone(),
        }
    }
}

impl<K, P: Value, E: Value> Observer<K, P, E> {
    observer_methods!();
}

impl<K, P, E, H> Clone for TaskRunnerRepository<K, P, E, H> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            hasher: PhantomData,
        }
    }
}

impl<K, P, E> Clone for Observer<K, P, E> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
        }
    }
}

impl<K, P, E> Clone for Controller<K, P, E> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
        }
    }
}

impl<K, P, E> fmt::Debug for Handle<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shared, f)
    }
}

impl<K, P, E, H> fmt::Debug for TaskRunnerRepository<K, P, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.handle, f)
    }
}

impl<K, P, E> fmt::Debug for Observer<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Observer").field(&self.handle).finish()
    }
}

impl<K, P, E> fmt::Debug for Controller<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Controller").field(&self.handle).finish()
    }
}

impl<K, P, E, H> fmt::Debug for Builder<K, P, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("retain_for", &self.retain_for)
            .field("retain_keys", &self.retain_keys)
            .field("max_deltas", &self.max_deltas)
            .finish_non_exhaustive()
    }
}
