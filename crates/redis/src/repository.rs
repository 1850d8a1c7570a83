//! [`ClusterRepository`], its [`Builder`], and the typestate nodes.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::panic;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use event_listener::EventListener;
use futures_core::Stream;
use keyrunner_resource_registry::Registry;
use keyrunner_task_runner_repository::{
    Conflict, Event, NoError, Outcome, Position, Reason, RunId, State, TaskContext,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode};
use crate::error::{Error, ErrorKind, RunError, StopError};
use crate::item::IntoProgress;
use crate::layout::Layout;
use crate::observe::{EventStream, Queue as StreamQueue, Subscription};
use crate::run::{
    Driver, Ending, Live, LocalRuns, OnEpoch, Owner, RunHandle, RunShared, Slot, discard,
    encode_outcome, lease_lost, reason_of,
};
use crate::runtime::Rt;
use crate::store::{Acquired, Answer, Stopped, Store, Timing};
use crate::watch::{Delivery, Dispatcher, Msg, Queue, Router, Subscriptions, Watch};
use crate::wire::decode_stored;

/// The default lease TTL: an owner that stops renewing loses its keys within
/// TTL + TTL/4 (+ one round trip).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The default retention of an idle key's last outcome and progress in Redis.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);

/// The default namespace (prefix of every Redis key and channel).
pub const DEFAULT_NAMESPACE: &str = "keyrunner";

/// The longest lease TTL: a day without renewal is already no crash detection, and deadlines
/// computed from longer ones overflow the clocks' arithmetic.
const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Each step of `connect` is bounded by this many call timeouts.
const CONNECT_TIMEOUTS: u32 = 4;

/// Keys reaped per script call (a call blocks Redis while it runs).
const REAP_BATCH: usize = 128;

/// How long an acquisition the caller stopped waiting for may still take before it is forgotten
/// (then only the reaper ends it), in lease TTLs.
const LATE_ACQUIRE_TTLS: u32 = 10;

/// A repository of task runners shared by every replica that connects to the same Redis and
/// namespace: each key runs **at most one task cluster-wide**.
///
/// Built with [`builder`](Self::builder). Cloning gives another handle to the same replica; the
/// replica shuts down (its runs are stopped) when the last handle is dropped. See the
/// [crate docs](crate) for the guarantees.
///
/// Every replica sees the runs of every other:
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::{Arc, Mutex};
///
/// use futures::stream;
/// use keyrunner_redis::testing::RedisServer;
/// use keyrunner_redis::{ClusterRepository, Outcome, State};
///
/// let redis = RedisServer::start();
/// let owner: ClusterRepository<String, u32, String> =
///     ClusterRepository::builder(redis.url()).connect().await?;
/// let watcher: ClusterRepository<String, u32, String> =
///     ClusterRepository::builder(redis.url()).connect().await?;
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let _watching = watcher
///     .listen(
///         "job".to_owned(),
///         move |item| {
///             if let Some(state) = item.clone().unwrap().into_state() {
///                 sink.lock().unwrap().push(state);
///             }
///         },
///         true,
///     )
///     .await?;
///
/// let handle = owner.run("job".to_owned(), |_cx| stream::iter([1, 2])).await.unwrap();
/// assert_eq!(handle.await, Outcome::Completed);
/// # for _ in 0..5000 { if seen.lock().unwrap().len() >= 5 { break } tokio::time::sleep(std::time::Duration::from_millis(1)).await; }
/// let states = seen.lock().unwrap().clone();
/// assert_eq!(states.first(), Some(&State::Idle { last: None, progress: None }));
/// let last = states.last().unwrap();
/// assert_eq!(last.last_outcome(), Some(&Outcome::Completed));
/// assert_eq!(last.progress(), Some(&2));
/// # Ok::<(), keyrunner_redis::Error>(())
/// # }).unwrap();
/// ```
pub struct ClusterRepository<K, P, E = NoError> {
    core: Arc<Core<K, P, E>>,
}

struct Core<K, P, E> {
    store: Arc<Store>,
    runs: Arc<LocalRuns<E>>,
    queue: Arc<Queue<P, E>>,
    subscriptions: Arc<Subscriptions>,
    watches: Registry<K, Arc<Watch<P, E>>>,
    live: Arc<Live>,
    spawner: Box<dyn Fn(Driver) + Send + Sync>,
    shut_down: AtomicBool,
    on_epoch: OnEpoch,
}

/// Configures and connects a [`ClusterRepository`].
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct Builder<K, P, E = NoError> {
    url: Result<redis::ConnectionInfo, Error>,
    namespace: String,
    ttl: Duration,
    retention: Duration,
    timeout: Option<Duration>,
    spawner: Option<Box<dyn Fn(Driver) + Send + Sync>>,
    types: Types<K, P, E>,
}

/// The builder's type parameters, owned by nothing (and `Send + Sync` whatever they are).
type Types<K, P, E> = PhantomData<fn() -> (K, P, E)>;

/// What to do with a finished acquisition attempt.
enum Attempt<F, E> {
    Started(RunHandle<E>),
    Busy { task: F, fence: u64 },
}

impl<K, P, E> ClusterRepository<K, P, E>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static,
    P: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A builder for a replica on the Redis at `url` (`redis://host:port/db`, or
    /// `redis+unix:///path/to/redis.sock`).
    pub fn builder(url: impl IntoConnectionInfo) -> Builder<K, P, E> {
        Builder {
            url: url.into_connection_info().map_err(Error::redis),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            ttl: DEFAULT_LEASE_TTL,
            retention: DEFAULT_RETENTION,
            timeout: None,
            spawner: None,
            types: PhantomData,
        }
    }

    /// This replica's id: random per repository, the owner name other replicas see.
    #[must_use]
    pub fn replica_id(&self) -> &str {
        &self.core.store.replica
    }

    /// `key`'s state as Redis stores it now (a key never run, or forgotten after the retention,
    /// is idle with no last outcome).
    pub async fn state(&self, key: &K) -> Result<State<P, E>, Error> {
        let member = encode("a key", key)?;
        Ok(self.core.read(&member).await?.state)
    }

    /// `key`'s state as Redis stores it now, as an [`Event::State`] with its position (the run
    /// and the sequence within it): what a stream of the key would start with.
    pub async fn event(&self, key: &K) -> Result<Event<P, E>, Error> {
        let member = encode("a key", key)?;
        let snapshot = self.core.read(&member).await?;
        Ok(Event::State {
            position: snapshot.position,
            state: snapshot.state,
        })
    }

    /// `key`'s state now, as a node that can act: run if idle, stop if running.
    pub async fn state_node(&self, key: K) -> Result<StateNode<K, P, E>, Error> {
        let member = encode("a key", &key)?;
        let stored = self.core.store.read(&member).await?;
        self.core.check_epoch(&stored.epoch);
        let snapshot = decode_stored::<P, E>(&stored, &self.core.store.layout.hash(&member))?;
        let fence = snapshot.position.run_id().map_or(0, RunId::get);
        Ok(match snapshot.state {
            State::Running { .. } => StateNode::Running(RunningNode {
                core: Arc::clone(&self.core),
                key,
                member,
                fence,
                owner: stored.o,
            }),
            State::Idle { last, .. } => StateNode::Idle(IdleNode {
                core: Arc::clone(&self.core),
                key,
                member,
                last,
            }),
        })
    }

    /// Runs `task` on `key` if no run holds it anywhere; otherwise refuses with
    /// [`RunError::Busy`]. The same as [`run_with`](Self::run_with) and [`Conflict::Reject`].
    pub async fn run<F, St, M>(&self, key: K, task: F) -> Result<RunHandle<E>, RunError<F>>
    where
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<P, E, M>,
        M: 'static,
    {
        self.run_with(key, Conflict::Reject, task).await
    }

    /// Runs `task` on `key`, resolving a key held by another run (on any replica) by
    /// `conflict`:
    ///
    /// - [`Conflict::Reject`]: [`RunError::Busy`], with the task back.
    /// - [`Conflict::UseExisting`]: a handle to the run going on; for a run on another replica
    ///   it resolves to that run's outcome, as this replica hears it.
    /// - [`Conflict::Replace`]: stops the run with [`Reason::superseded`], then runs.
    pub async fn run_with<F, St, M>(
        &self,
        key: K,
        conflict: Conflict,
        mut task: F,
    ) -> Result<RunHandle<E>, RunError<F>>
    where
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<P, E, M>,
        M: 'static,
    {
        let member = match encode("a key", &key) {
            Ok(member) => member,
            Err(error) => return Err(RunError::Failed { task, error }),
        };
        loop {
            match self.core.start(key.clone(), member.clone(), task).await? {
                Attempt::Started(handle) => return Ok(handle),
                Attempt::Busy { task: back, fence } => match conflict {
                    Conflict::Reject => {
                        return Err(RunError::Busy {
                            task: back,
                            running: RunId::new(fence),
                        });
                    }
                    Conflict::UseExisting => {
                        return self
                            .core
                            .handle_of(key, &member, fence)
                            .await
                            .map_err(|error| RunError::Failed { task: back, error });
                    }
                    Conflict::Replace => {
                        let superseded = Some(Reason::superseded());
                        match self.core.stop(&member, Some(fence), superseded).await {
                            Err(StopError::Unavailable(error)) => {
                                return Err(RunError::Failed { task: back, error });
                            }
                            // Stopped, or it ended meanwhile: try again either way.
                            _ => task = back,
                        }
                    }
                },
            }
        }
    }

    /// Stops whichever run holds `key` now, on any replica: the key is idle with
    /// `Stopped { reason }` for every replica as soon as this returns, and the owner's abort
    /// signal fires within one round trip (within TTL/3 if the notification is lost).
    ///
    /// # Panics
    ///
    /// When the run is this replica's, its abort callbacks run here; the first one's panic
    /// resumes from here, once the run is stopped. (A run on another replica is told by its own
    /// replica, where a callback's panic is caught and dropped.)
    pub async fn stop(
        &self,
        key: &K,
        reason: impl Into<Option<Reason>>,
    ) -> Result<RunId, StopError> {
        let member = encode("a key", key).map_err(StopError::Unavailable)?;
        self.core
            .stop(&member, None, reason.into())
            .await
            .map(RunId::new)
    }

    /// The keys running a task now, cluster-wide (live leases).
    pub async fn running_keys(&self) -> Result<Vec<K>, Error> {
        let (epoch, members) = self.core.store.running().await?;
        self.core.check_epoch(&epoch);
        members
            .iter()
            .map(|member| decode("a key", &self.core.store.layout.leases, member))
            .collect()
    }

    /// Calls `listener` with every event of `key` from now on, from every replica, in order;
    /// with `immediate`, first with a `State` event holding its current state (accumulated
    /// progress). Resolves once this replica's watch of the key has started (subscribed, then
    /// read the stored state).
    ///
    /// The listener runs on this replica's dispatcher task: keep it short (a slow listener
    /// delays the other keys' listeners on this replica, never the owner of a run), and wrap
    /// blocking work in `tokio::task::block_in_place` (or hand it to a thread), as anywhere on
    /// an async runtime: a worker thread blocked without it can keep the runtime's timers and
    /// sockets from being driven. After a
    /// disconnection it resynchronises with a `State` event from the stored state: it may skip
    /// intermediate events, never the latest state; unlike the in-process `listen`, which sees
    /// every event. Errors (a message that could not be decoded) arrive as `Err` items, and the
    /// listener goes on. A listener that panics does not stop the others; its panic is caught
    /// and dropped, as no call of yours made the event it was given.
    pub async fn listen<F>(
        &self,
        key: K,
        listener: F,
        immediate: bool,
    ) -> Result<Subscription, Error>
    where
        F: Fn(&Result<Event<P, E>, Error>) + Send + Sync + 'static,
    {
        encode("a key", &key)?;
        if self.is_shut_down() {
            return Err(Error::shut_down());
        }
        let watch = self.core.watches.allocate(key);
        // A subscription and a read, each bounded by the call timeout.
        let store = &self.core.store;
        store.rt.timeout(store.timeout * 2, watch.ready()).await??;
        let first = AtomicBool::new(immediate);
        let listener = watch.subject.listen(
            move |delivery: &Delivery<P, E>| {
                // An immediate listener's first call is the replay of the last delivery: it
                // starts from the key's state after it.
                if first.swap(false, Ordering::Relaxed)
                    && let Some(current) = &delivery.current
                {
                    return listener(&Ok(current.clone()));
                }
                for item in &delivery.items {
                    listener(item);
                }
            },
            immediate,
        );
        Ok(Subscription::new(listener, Box::new(watch)))
    }

    /// A stream of `key`'s events from every replica: a `State` event with its current state
    /// first, then every event in order (see [`EventStream`]).
    pub fn stream(&self, key: K) -> EventStream<P, E> {
        let queue = StreamQueue::new();
        let sink = Arc::clone(&queue);
        let watch = self.core.watches.allocate(key);
        let listener = watch.subject.listen(
            move |delivery: &Delivery<P, E>| StreamQueue::push(&sink, delivery),
            true,
        );
        EventStream::new(queue, Subscription::new(listener, Box::new(watch)))
    }

    /// Stops every run of this replica with `reason` (each stop written to Redis) and refuses
    /// runs from now on; the returned future resolves once every task stream of this replica has
    /// been dropped, including that of a run whose acquisition was in flight when the shutdown
    /// began (it is answered within the call timeout; a run it starts is stopped at once). Runs on other replicas go on. This replica's watches end: streams yield a
    /// last [`ShutDown`](ErrorKind::ShutDown) error and end, `listen` is refused, and a handle to
    /// a run on another replica resolves to `Lost` (its end will not be heard here).
    ///
    /// # Panics
    ///
    /// The runs' abort callbacks run here: the first one's panic resumes from here, once every
    /// run has been asked to stop and every watch ended.
    pub fn shutdown(&self, reason: impl Into<Option<Reason>>) -> Shutdown {
        self.core.shutdown(reason.into());
        Shutdown {
            live: Arc::clone(&self.core.live),
            listener: None,
        }
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    #[must_use]
    pub fn is_shut_down(&self) -> bool {
        self.core.shut_down.load(Ordering::SeqCst)
    }

    /// How many runs this replica drives now.
    #[must_use]
    pub fn local_runs(&self) -> usize {
        self.core.runs.len()
    }

    /// How many task streams of this replica are alive now.
    #[must_use]
    pub fn live_tasks(&self) -> usize {
        self.core.live.get()
    }

    /// How many keys this replica watches now (listened to, streamed, or awaited remotely).
    #[must_use]
    pub fn watched_keys(&self) -> usize {
        self.core.watches.len()
    }
}

impl<K, P, E> Core<K, P, E>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static,
    P: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    async fn read(&self, member: &str) -> Result<crate::wire::Snapshot<P, E>, Error> {
        let stored = self.store.read(member).await?;
        self.check_epoch(&stored.epoch);
        decode_stored(&stored, &self.store.layout.hash(member))
    }

    /// Notices a changed epoch in a read.
    fn check_epoch(&self, seen: &str) {
        if *self.store.epoch() != *seen {
            (self.on_epoch)(seen.to_owned());
        }
    }

    /// One acquisition attempt; starts the driver when it wins.
    async fn start<F, St, M>(
        &self,
        key: K,
        member: String,
        task: F,
    ) -> Result<Attempt<F, E>, RunError<F>>
    where
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<P, E, M>,
        M: 'static,
    {
        let mut adopted = false;
        loop {
            // Counted before the check: a shutdown that begins from here on waits for this
            // acquisition, and for the driver it may start.
            let _starting = self.live.starting();
            if self.shut_down.load(Ordering::SeqCst) {
                return Err(RunError::ShutDown { task });
            }
            let acquiring = self.runs.acquiring(&member);
            let epoch = self.store.epoch();
            let sent = Instant::now();
            let answer = match self.acquire(&member, &epoch).await {
                Ok(answer) => answer,
                Err(error) => return Err(RunError::Failed { task, error }),
            };
            match answer {
                Answer::Done(Acquired::Busy { fence, .. }) => {
                    return Ok(Attempt::Busy { task, fence });
                }
                Answer::Done(Acquired::Won { fence, seq }) => {
                    let run = RunShared::new(member, fence, epoch);
                    let ended = self.runs.insert(Arc::clone(&run));
                    drop(acquiring);
                    if let Some(outcome) = ended {
                        // Stopped (or reaped) elsewhere while the answer was on its way: the
                        // driver ends it at once. The task has not been called: no abort
                        // callback can panic.
                        let reason = reason_of(&outcome);
                        discard(run.end(Ending::Recorded(outcome), reason));
                    } else if self.shut_down.load(Ordering::SeqCst) {
                        // Shutdown began while Redis answered: the driver writes the stop.
                        // The task has not been called: no abort callback can panic.
                        discard(run.end(Ending::Requested(None), None));
                    }
                    let owner = Owner::new(
                        Arc::clone(&run),
                        Arc::clone(&self.store),
                        Arc::clone(&self.runs),
                        Arc::clone(&self.live),
                        Arc::clone(&self.on_epoch),
                        task,
                        key,
                        seq,
                        sent,
                    );
                    (self.spawner)(Driver::new(owner));
                    if run.was_refused() {
                        return Err(RunError::Spawn {
                            run: RunId::new(fence),
                        });
                    }
                    return Ok(Attempt::Started(RunHandle::local(&run)));
                }
                Answer::Epoch(seen) if !adopted => {
                    adopted = true;
                    if let Err(error) =
                        adopt_epoch(&self.store, &self.runs, &self.queue, seen).await
                    {
                        return Err(RunError::Failed { task, error });
                    }
                }
                Answer::Epoch(_) => {
                    let error =
                        Error::corrupt(&self.store.layout.epoch, "the epoch keeps changing");
                    return Err(RunError::Failed { task, error });
                }
            }
        }
    }

    /// Acquires within the call timeout; an acquisition still in flight then goes on in the
    /// background, and is released at once (idle with `Lost`) if Redis applies it.
    async fn acquire(&self, member: &str, epoch: &Arc<str>) -> Result<Answer<Acquired>, Error> {
        let store = Arc::clone(&self.store);
        let (member, epoch) = (member.to_owned(), Arc::clone(epoch));
        let late_bound = store.ttl * LATE_ACQUIRE_TTLS;
        let mut acquiring = Box::pin(async move {
            let answer = store.acquire(&member, &epoch, late_bound).await;
            (answer, store, member, epoch)
        });
        match self
            .store
            .rt
            .timeout(self.store.timeout, &mut acquiring)
            .await
        {
            Ok((answer, ..)) => answer,
            Err(timeout) => {
                self.store.rt.spawn(Box::pin(async move {
                    let (answer, store, member, epoch) = acquiring.await;
                    if let Ok(Answer::Done(Acquired::Won { fence, .. })) = answer {
                        // Nobody drives this run: release it (a failure leaves it to the reaper).
                        let _ = store.stop(&member, &epoch, Some(fence), store.lost()).await;
                    }
                }));
                Err(timeout)
            }
        }
    }

    async fn stop(
        &self,
        member: &str,
        fence: Option<u64>,
        reason: Option<Reason>,
    ) -> Result<u64, StopError> {
        let outcome = Outcome::<E>::Stopped {
            reason: reason.clone(),
        };
        let text = encode_outcome(&outcome);
        let mut adopted = false;
        loop {
            let epoch = self.store.epoch();
            let answer = self
                .store
                .stop(member, &epoch, fence, &text)
                .await
                .map_err(StopError::Unavailable)?;
            return match answer {
                Answer::Done(Stopped::Ok { fence: stopped }) => {
                    if let Some(run) = self.runs.get(member, Some(stopped))
                        && let Some(payload) = run.end(Ending::Recorded(outcome), reason)
                    {
                        // An abort callback's panic resumes from here, once the run is stopped.
                        panic::resume_unwind(payload);
                    }
                    Ok(stopped)
                }
                Answer::Done(Stopped::Idle { .. }) => match fence {
                    Some(fence) => Err(StopError::Ended {
                        run: RunId::new(fence),
                    }),
                    None => Err(StopError::Idle),
                },
                Answer::Done(Stopped::Stale) => Err(StopError::Ended {
                    run: RunId::new(fence.unwrap_or_default()),
                }),
                Answer::Epoch(seen) if !adopted => {
                    adopted = true;
                    adopt_epoch(&self.store, &self.runs, &self.queue, seen)
                        .await
                        .map_err(StopError::Unavailable)?;
                    continue;
                }
                Answer::Epoch(_) => Err(StopError::Unavailable(Error::corrupt(
                    &self.store.layout.epoch,
                    "the epoch keeps changing",
                ))),
            };
        }
    }

    /// A handle to run `fence` of `key`: the local run's, or one fed by the key's watch.
    async fn handle_of(&self, key: K, member: &str, fence: u64) -> Result<RunHandle<E>, Error> {
        if let Some(run) = self.runs.get(member, Some(fence)) {
            return Ok(RunHandle::local(&run));
        }
        let watch = self.watches.allocate(key);
        self.store
            .rt
            .timeout(self.store.timeout * 2, watch.ready())
            .await??;
        let slot = Slot::new();
        let sink = Arc::clone(&slot);
        let replayed = AtomicBool::new(false);
        let listener = watch.subject.listen(
            move |delivery: &Delivery<P, E>| {
                // The first call replays the watch's last delivery: it may come from before the
                // run started, or end before the run's end (an error after it). The stored
                // state, read below, settles what the replay cannot.
                let seen = if replayed.swap(true, Ordering::Relaxed) {
                    Seen::Live
                } else {
                    Seen::Replay
                };
                for item in &delivery.items {
                    match item {
                        Ok(Event::State { position, state }) => {
                            settle_remote(&sink, fence, position, state, seen);
                        }
                        Ok(Event::Delta { .. }) => {}
                        // This replica stopped watching: the run's end will not be heard here.
                        Err(error) if error.kind() == ErrorKind::ShutDown => {
                            sink.set(Outcome::Lost);
                            return;
                        }
                        Err(_) => {}
                    }
                }
                // The key's state after the delivery.
                if let Some(Event::State { position, state }) = &delivery.current {
                    settle_remote(&sink, fence, position, state, seen);
                }
            },
            true,
        );
        // The stored state, read once the listener is in place: whatever it does not show yet
        // is delivered to the listener. A failed read leaves it to the key's channel.
        if !slot.is_set()
            && let Ok(snapshot) = self.read(member).await
        {
            settle_remote(
                &slot,
                fence,
                &snapshot.position,
                &snapshot.state,
                Seen::Stored,
            );
        }
        Ok(RunHandle::remote(
            fence,
            slot,
            Arc::new(Subscription::new(listener, Box::new(watch))),
        ))
    }

    fn shutdown(&self, reason: Option<Reason>) {
        self.shut_down.store(true, Ordering::SeqCst);
        // Every run is stopped and every watch ended even if an abort callback panics on the
        // way; the first panic resumes once they all are.
        let mut panicked = None;
        for run in self.runs.all() {
            let payload = run.end(Ending::Requested(reason.clone()), reason.clone());
            if panicked.is_none() {
                panicked = payload;
            } else {
                discard(payload);
            }
        }
        self.queue.push(Msg::Shutdown);
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }
}

impl<K, P, E> Drop for Core<K, P, E> {
    fn drop(&mut self) {
        // The last handle is gone: shut down implicitly, without waiting. Each driver writes its
        // stop and ends; the background tasks end with the queues.
        self.shut_down.store(true, Ordering::SeqCst);
        for run in self.runs.all() {
            discard(run.end(Ending::Requested(None), None));
        }
        self.queue.close();
        self.subscriptions.close();
    }
}

/// Where a remote handle learns a state of its run's key from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A delivery of the key's watch, after the handle's listener was in place.
    Live,
    /// The watch's last delivery, replayed to the new listener: it may come from before the run
    /// started (a key with no history yet is no data loss then).
    Replay,
    /// The stored state, read once the listener was in place: a later run in it may not have
    /// been delivered yet, and the delivery before it may be this run's end.
    Stored,
}

/// Settles a remote handle of run `fence` from one state of its key at `position`: the run's end,
/// or a later run or no history at all (Redis lost its data), whose end was not observed here.
fn settle_remote<P, E>(
    slot: &Slot<E>,
    fence: u64,
    position: &Position,
    state: &State<P, E>,
    seen: Seen,
) {
    match (position.run_id().map(RunId::get), state) {
        (Some(run), State::Idle { last, .. }) if run == fence => {
            slot.set(last.clone().unwrap_or(Outcome::Lost));
        }
        (Some(run), _) if run > fence && seen != Seen::Stored => {
            slot.set(Outcome::Lost);
        }
        (None, _) if seen != Seen::Replay => {
            slot.set(Outcome::Lost);
        }
        _ => {}
    }
}

/// Adopts the namespace's current epoch (creating one if Redis lost it) after a script said the
/// known one is stale; if this call is the one that adopts it, every local run of the old epoch
/// ends as `Lost` and every watched key is read again.
async fn adopt_epoch<P, E>(
    store: &Store,
    runs: &LocalRuns<E>,
    queue: &Queue<P, E>,
    _seen: String,
) -> Result<(), Error> {
    let known = store.epoch();
    // Ask rather than trust what a reply said: a reply can only be as new as its call.
    let current = store.hello(&random_id()).await?;
    if *current != *known && store.replace_epoch(&known, &current) {
        for run in runs.all() {
            if run.epoch == known {
                // Nobody called for this end: a callback's panic must not keep the other runs
                // going.
                discard(run.end(Ending::DataLoss, Some(lease_lost())));
            }
        }
        queue.push(Msg::ResyncAll);
    }
    Ok(())
}

impl<K, P, E> Builder<K, P, E>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static,
    P: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The prefix of every Redis key and channel of this repository (default
    /// [`DEFAULT_NAMESPACE`]). Replicas that share a namespace share their keys.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a run's lease lasts without renewal (default [`DEFAULT_LEASE_TTL`]; from 30 ms to
    /// one day). The owner renews every TTL/3; a dead owner's keys are `Lost` within
    /// TTL + TTL/4 (+ one round trip).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long Redis keeps an idle key's last outcome and progress (default
    /// [`DEFAULT_RETENTION`]). `Duration::MAX` keeps them (as long as Redis accepts: about 146
    /// million years).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The bound on every call to Redis (default TTL/4, at most one second); must be below
    /// TTL/3.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Drives runs with `spawner`, which runs each [`Driver`] to completion in the background
    /// (default: the runtime's own spawn, on the runtime current when
    /// [`connect`](Self::connect) is called).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), keyrunner_redis::Error> {
    /// use keyrunner_redis::ClusterRepository;
    ///
    /// let handle = tokio::runtime::Handle::current();
    /// let agents: ClusterRepository<String, String> =
    ///     ClusterRepository::builder("redis://127.0.0.1/")
    ///         .spawner(move |driver| drop(handle.spawn(driver)))
    ///         .connect()
    ///         .await?;
    /// # drop(agents);
    /// # Ok(()) }
    /// # let _ = demo;
    /// ```
    pub fn spawner(mut self, spawner: impl Fn(Driver) + Send + Sync + 'static) -> Self {
        self.spawner = Some(Box::new(spawner));
        self
    }

    /// Connects: two connections (commands, and subscriptions on RESP3), the namespace's epoch,
    /// the scripts, this replica's control channel, and the background tasks (dispatcher, lease
    /// reaper). Call it inside the runtime the repository will run on.
    pub async fn connect(self) -> Result<ClusterRepository<K, P, E>, Error> {
        let rt = Rt::current()?;
        let info = self.url?;
        let ttl = self.ttl;
        if ttl < Duration::from_millis(30) || ttl > MAX_LEASE_TTL {
            return Err(Error::new(ErrorKind::Config)
                .detail("the lease TTL must be 30 ms or more, and one day or less"));
        }
        let timeout = self
            .timeout
            .unwrap_or_else(|| (ttl / 4).min(Duration::from_secs(1)));
        if timeout >= ttl / 3 || timeout.is_zero() {
            return Err(Error::new(ErrorKind::Config).detail(format_args!(
                "the call timeout ({timeout:?}) must be above zero and below TTL/3 ({:?})",
                ttl / 3
            )));
        }
        let replica: Arc<str> = random_id().into();
        let layout = Layout::new(&self.namespace);
        let runs = Arc::new(LocalRuns::new());
        let queue = Queue::new();
        let router = Router {
            control: layout.control(&replica),
            queue: Arc::clone(&queue),
            runs: Arc::clone(&runs),
            rt: rt.clone(),
        };

        // Reconnect forever, with a backoff capped well below the TTL; our own timeouts bound
        // every call, so the client's response timeout is off.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(usize::MAX)
            .set_min_delay(Duration::from_millis(5))
            .set_max_delay((ttl / 10).min(Duration::from_secs(1)))
            .set_response_timeout(None)
            .set_connection_timeout(Some(timeout));
        let commands = Client::open(info.clone()).map_err(Error::redis)?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let subscriber = Client::open(info.set_redis_settings(resp3)).map_err(Error::redis)?;
        let sub_config = config
            .clone()
            .set_push_sender(move |push| {
                router.route(push);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription();
        // Connecting is not on anyone's hot path: each of its steps gets four call timeouts.
        let setup = timeout * CONNECT_TIMEOUTS;
        let connect = |client: Client, config: ConnectionManagerConfig| {
            let rt = rt.clone();
            async move {
                rt.timeout(
                    setup,
                    rt.enter(ConnectionManager::new_with_config(client, config)),
                )
                .await?
                .map_err(Error::redis)
            }
        };
        let conn = connect(commands, config).await?;
        let mut sub_conn = connect(subscriber, sub_config).await?;

        let store = Arc::new(Store::new(
            rt.clone(),
            conn,
            layout,
            Arc::clone(&replica),
            Timing {
                ttl,
                retention: self.retention,
                timeout,
            },
            encode_outcome(&Outcome::<E>::Lost),
        ));
        store.load_scripts(setup).await?;
        let epoch = store.hello_within(&random_id(), setup).await?;
        store.replace_epoch("", &epoch);
        let control = store.layout.control(&replica);
        rt.timeout(setup, rt.enter(sub_conn.subscribe(&control)))
            .await?
            .map_err(Error::redis)?;

        let on_epoch: OnEpoch = {
            let (store, runs, queue) = (Arc::clone(&store), Arc::clone(&runs), Arc::clone(&queue));
            Arc::new(move |seen: String| {
                let (inner, runs, queue) =
                    (Arc::clone(&store), Arc::clone(&runs), Arc::clone(&queue));
                store.rt.spawn(Box::pin(async move {
                    // A failure is retried by the next call that sees the epoch differ.
                    let _ = adopt_epoch(&inner, &runs, &queue, seen).await;
                }));
            })
        };
        let subscriptions = Subscriptions::new();
        rt.spawn(Box::pin(Arc::clone(&subscriptions).work(
            Arc::clone(&store),
            sub_conn,
            Arc::clone(&queue),
        )));
        rt.spawn(Box::pin(
            Dispatcher::new(
                Arc::clone(&store),
                Arc::clone(&queue),
                Arc::clone(&subscriptions),
                Arc::clone(&on_epoch),
            )
            .run(),
        ));
        rt.spawn(Box::pin(reaper(
            Arc::clone(&store),
            Arc::clone(&queue),
            Arc::clone(&on_epoch),
        )));

        let watches = {
            let queue = Arc::clone(&queue);
            Registry::new(move |key: &K| {
                // Every caller encoded the key before allocating it: this cannot fail.
                let member = encode("a key", key).unwrap_or_default();
                Watch::new(member, &queue)
            })
        };
        let spawner = self.spawner.unwrap_or_else(|| {
            let rt = rt.clone();
            Box::new(move |driver: Driver| rt.spawn(Box::pin(driver)))
        });
        Ok(ClusterRepository {
            core: Arc::new(Core {
                store,
                runs,
                queue,
                subscriptions,
                watches,
                live: Arc::new(Live::default()),
                spawner,
                shut_down: AtomicBool::new(false),
                on_epoch,
            }),
        })
    }
}

/// Every TTL/4 (shortened by up to TTL/16 of jitter, never lengthened): reap the leases that ran
/// out, and let the dispatcher retry what failed. A reap that fails is tried again after TTL/32:
/// a replica whose connection was just reset (or whose partition just healed) reaps within a
/// round trip of getting Redis back, not a whole period later.
async fn reaper<P, E>(store: Arc<Store>, queue: Arc<Queue<P, E>>, on_epoch: OnEpoch) {
    let mut jitter = Jitter::new(&store.replica);
    let period = store.ttl / 4;
    let mut pause = period - jitter.up_to(period / 4);
    while !queue.is_closed() {
        store.rt.sleep(pause).await;
        if queue.is_closed() {
            return;
        }
        pause = period - jitter.up_to(period / 4);
        loop {
            let epoch = store.epoch();
            match store.reap(&epoch, REAP_BATCH).await {
                Ok(Answer::Done(reaped)) if reaped == REAP_BATCH => continue,
                Ok(Answer::Done(_)) => {}
                Ok(Answer::Epoch(seen)) => on_epoch(seen),
                // Unreachable now: try again soon.
                Err(_) => pause = period / 8,
            }
            break;
        }
        queue.push(Msg::Tick);
    }
}

/// A small xorshift generator: jitter needs no cryptography.
struct Jitter(u64);

impl Jitter {
    fn new(seed: &str) -> Self {
        Self(RandomState::new().hash_one(seed) | 1)
    }

    fn up_to(&mut self, bound: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.0 % nanos)
    }
}

/// 16 random hex digits: replica ids and fresh epochs.
pub(crate) fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    std::process::id().hash(&mut hasher);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// A key's state at one instant, as a capability to act: run an idle key, stop a running one.
///
/// ```compile_fail,E0599
/// # async fn f(repository: keyrunner_redis::ClusterRepository<String, String, String>) {
/// use keyrunner_redis::StateNode;
/// if let Ok(StateNode::Idle(idle)) = repository.state_node("a".to_owned()).await {
///     idle.stop(None).await; // there is nothing to stop on an idle node
/// }
/// # }
/// ```
pub enum StateNode<K, P, E = NoError> {
    /// The key was idle.
    Idle(IdleNode<K, P, E>),
    /// The key was running.
    Running(RunningNode<K, P, E>),
}

/// A key seen idle: [`run`](Self::run) starts a task if it is still idle, cluster-wide.
///
/// `run` consumes the node, so a node acts at most once:
///
/// ```compile_fail,E0382
/// # async fn f(repository: keyrunner_redis::ClusterRepository<String, String, String>) {
/// use keyrunner_redis::StateNode;
/// if let Ok(StateNode::Idle(idle)) = repository.state_node("a".to_owned()).await {
///     let _first = idle.run(|_| futures::stream::empty::<String>()).await;
///     let _second = idle.run(|_| futures::stream::empty::<String>()).await; // use of moved value
/// }
/// # }
/// ```
pub struct IdleNode<K, P, E = NoError> {
    core: Arc<Core<K, P, E>>,
    key: K,
    member: String,
    last: Option<Outcome<E>>,
}

/// A key seen running one particular run (on any replica): [`stop`](Self::stop) stops that run,
/// never a later one.
///
/// ```compile_fail,E0599
/// # async fn f(repository: keyrunner_redis::ClusterRepository<String, String, String>) {
/// use keyrunner_redis::StateNode;
/// if let Ok(StateNode::Running(running)) = repository.state_node("a".to_owned()).await {
///     running.run(|_| futures::stream::empty::<String>()).await; // a running key cannot start another task
/// }
/// # }
/// ```
pub struct RunningNode<K, P, E = NoError> {
    core: Arc<Core<K, P, E>>,
    key: K,
    member: String,
    fence: u64,
    owner: String,
}

impl<K, P, E> IdleNode<K, P, E>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static,
    P: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts `task` if no run holds the key at this instant, cluster-wide; otherwise
    /// [`RunError::Busy`] with the task back. Of N replicas racing, exactly one wins.
    pub async fn run<F, St, M>(self, task: F) -> Result<RunHandle<E>, RunError<F>>
    where
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<P, E, M>,
        M: 'static,
    {
        match self.core.start(self.key, self.member, task).await? {
            Attempt::Started(handle) => Ok(handle),
            Attempt::Busy { task, fence } => Err(RunError::Busy {
                task,
                running: RunId::new(fence),
            }),
        }
    }
}

impl<K, P, E> IdleNode<K, P, E> {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// How the key's last run ended, when the node was taken (if Redis still had it).
    #[must_use]
    pub fn last_outcome(&self) -> Option<&Outcome<E>> {
        self.last.as_ref()
    }
}

impl<K, P, E> RunningNode<K, P, E>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static,
    P: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Stops the run this node saw, wherever it runs: the key is idle with
    /// `Stopped { reason }` for every replica as soon as this returns. If that run has already
    /// ended (even if a later run holds the key), nothing changes and [`StopError::Ended`] is
    /// returned.
    ///
    /// # Panics
    ///
    /// As [`ClusterRepository::stop`]: an abort callback's panic of a run of this replica
    /// resumes from here, once the run is stopped.
    pub async fn stop(self, reason: impl Into<Option<Reason>>) -> Result<(), StopError> {
        self.core
            .stop(&self.member, Some(self.fence), reason.into())
            .await
            .map(drop)
    }

    /// A handle to the run this node saw: the local run's if this replica drives it, otherwise
    /// one that resolves when this replica hears the run end.
    pub async fn handle(&self) -> Result<RunHandle<E>, Error> {
        self.core
            .handle_of(self.key.clone(), &self.member, self.fence)
            .await
    }
}

impl<K, P, E> RunningNode<K, P, E> {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The run this node saw (its fence).
    #[must_use]
    pub fn run_id(&self) -> RunId {
        RunId::new(self.fence)
    }

    /// The id of the replica that drives the run.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

impl<K, P, E> StateNode<K, P, E> {
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

/// Resolves once every task stream of a replica that is shutting down has been dropped.
#[must_use = "futures do nothing unless polled"]
pub struct Shutdown {
    live: Arc<Live>,
    listener: Option<EventListener>,
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.live.is_idle() {
                return Poll::Ready(());
            }
            match &mut self.listener {
                None => self.listener = Some(self.live.listen()),
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.listener = None;
                }
            }
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("live_tasks", &self.live.get())
            .finish()
    }
}

impl<K, P, E> Clone for ClusterRepository<K, P, E> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
        }
    }
}

impl<K, P, E> fmt::Debug for ClusterRepository<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterRepository")
            .field("replica", &self.core.store.replica)
            .field("store", &self.core.store)
            .field("local_runs", &self.core.runs.try_len())
            .field("live_tasks", &self.core.live.get())
            .field("shut_down", &self.core.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K, P, E> fmt::Debug for Builder<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("namespace", &self.namespace)
            .field("lease_ttl", &self.ttl)
            .field("retention", &self.retention)
            .field("call_timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Debug, P, E: fmt::Debug> fmt::Debug for StateNode<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle(node) => f.debug_tuple("Idle").field(node).finish(),
            Self::Running(node) => f.debug_tuple("Running").field(node).finish(),
        }
    }
}

impl<K: fmt::Debug, P, E: fmt::Debug> fmt::Debug for IdleNode<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleNode")
            .field("key", &self.key)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Debug, P, E> fmt::Debug for RunningNode<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningNode")
            .field("key", &self.key)
            .field("run", &RunId::new(self.fence))
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}
