//! What every handle of a repository shares: [`Inner`], seen through the object-safe [`Shared`]
//! so that no handle, node, guard or stream names the hasher.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use keyrunner_pub_sub::{PubSub, Subscription as TopicSubscription, Topic};

use crate::abort::{AbortController, AbortSignal};
use crate::bounds::{Key, Value};
use crate::observe::{SlotListener, Watched};
use crate::panics::Deferred;
use crate::retention::Retention;
use crate::run::{ErasedRun, Run, RunCore, RunOps, Slot};
use crate::shutdown::{Live, LiveTasks, Shutdown};
use crate::spawn::{DebugSpawn, Driver, Spawn};
use crate::state::{Reason, RunId, State};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What the start transition hands the code that builds the driver.
pub(crate) struct Begun<K, P, E> {
    pub(crate) run: Arc<dyn RunOps<K, P, E>>,
    pub(crate) core: Arc<RunCore<P, E>>,
    pub(crate) live: Live,
}

/// Why the start transition did not start a run.
pub(crate) enum Refusal {
    Busy(RunId),
    ShutDown,
}

/// A repository, whatever its hasher.
pub(crate) trait Shared<K, P, E>: Send + Sync + fmt::Debug {
    fn common(&self) -> &Common;
    /// The key's slot now; `None` for a key not remembered (it never ran).
    fn last(&self, key: &K) -> Option<Arc<Slot<P, E>>>;
    fn state(&self, key: &K) -> State<P, E>;
    fn is_allocated(&self, key: &K) -> bool;
    fn len(&self) -> usize;
    fn running_keys(&self) -> Vec<K>;
    fn listen(&self, key: K, listener: SlotListener<P, E>, immediate: bool)
    -> Box<dyn Send + Sync>;
    /// Registers `listener` with `immediate` and keeps a lease to read the key's slot.
    fn watch(&self, key: K, listener: SlotListener<P, E>) -> Box<dyn Watched<P, E>>;
    /// The start transition: the key runs a new run if it was idle at this instant.
    fn begin(&self, key: K, panic: &mut Deferred) -> Result<Begun<K, P, E>, Refusal>;
    fn shutdown(&self, reason: Option<Reason>) -> Shutdown;
    fn shrink_to_fit(&self);
}

/// The parts of a repository that know neither its keys nor its hasher.
pub(crate) struct Common {
    spawner: Box<dyn Spawn>,
    next_run: AtomicU64,
    shut_down: AtomicBool,
    /// Fired once a shutdown has stopped every run.
    shutdown_signal: AbortController,
    pub(crate) live: Arc<LiveTasks>,
    /// User handles (repository, observer and controller clones) alive; the last one to go
    /// shuts the repository down.
    pub(crate) handles: AtomicUsize,
    max_deltas: usize,
}

impl Common {
    pub(crate) fn spawn(&self, driver: Driver) {
        self.spawner.spawn(driver);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    pub(crate) fn shutdown_signal(&self) -> AbortSignal {
        self.shutdown_signal.signal()
    }
}

pub(crate) struct Inner<K, P, E, H> {
    topics: PubSub<K, Slot<P, E>, H>,
    common: Common,
    retention: Option<Arc<Retention<K, P, E, H>>>,
}

impl<K, P, E, H> Inner<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(
        spawner: Box<dyn Spawn>,
        hasher: H,
        max_deltas: usize,
        retention: Option<Retention<K, P, E, H>>,
    ) -> Self {
        let topics = PubSub::builder()
            .shared_initial_value(Slot::never())
            // A running key publishes one state per item: reuse the retired states' memory.
            .reuse_values()
            // An idle key nobody holds is forgotten; a running key is held by its driver anyway.
            .should_cleanup(|_: &K, slot: &Slot<P, E>| slot.run.is_none())
            .hasher(hasher)
            .build();
        Self {
            topics,
            common: Common {
                spawner,
                next_run: AtomicU64::new(1),
                shut_down: AtomicBool::new(false),
                shutdown_signal: AbortController::new(),
                live: Arc::new(LiveTasks::default()),
                handles: AtomicUsize::new(0),
                max_deltas,
            },
            retention: retention.map(Arc::new),
        }
    }

    /// Lets go of retained keys whose time is up, before anything reads the keys.
    fn expire(&self) {
        if let Some(retention) = &self.retention {
            retention.expire();
        }
    }
}

impl<K, P, E, H> Shared<K, P, E> for Inner<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Clone + Send + Sync + 'static,
{
    fn common(&self) -> &Common {
        &self.common
    }

    fn last(&self, key: &K) -> Option<Arc<Slot<P, E>>> {
        self.expire();
        self.topics.last(key)
    }

    fn state(&self, key: &K) -> State<P, E> {
        self.last(key)
            .map_or_else(State::default, |slot| slot.state())
    }

    fn is_allocated(&self, key: &K) -> bool {
        self.expire();
        self.topics.is_allocated(key)
    }

    fn len(&self) -> usize {
        self.expire();
        self.topics.len()
    }

    fn running_keys(&self) -> Vec<K> {
        let mut running = Vec::new();
        self.topics.for_each(|key, slot| {
            if slot.is_some_and(|slot| slot.run.is_some()) {
                running.push(key.clone());
            }
        });
        running
    }

    fn listen(
        &self,
        key: K,
        listener: SlotListener<P, E>,
        immediate: bool,
    ) -> Box<dyn Send + Sync> {
        self.expire();
        Box::new(self.topics.listen(key, listener, immediate))
    }

    fn watch(&self, key: K, listener: SlotListener<P, E>) -> Box<dyn Watched<P, E>> {
        self.expire();
        let topic = self.topics.subject(key);
        let subscription = topic.listen(listener, true);
        Box::new(WatchedKey {
            _subscription: subscription,
            topic,
        })
    }

    fn begin(&self, key: K, panic: &mut Deferred) -> Result<Begun<K, P, E>, Refusal> {
        let common = &self.common;
        if common.is_shut_down() {
            return Err(Refusal::ShutDown);
        }
        self.expire();
        // Counted before the compare-and-set, so a shutdown's `Shutdown` future also waits for a
        // start that is still deciding; the token uncounts it should the start unwind.
        let live = common.live.enter();
        let core = Arc::new(RunCore::new(common.max_deltas));
        let run = Arc::new(Run::new(
            Arc::clone(&core),
            self.topics.subject(key),
            self.retention.clone(),
        ));
        // Moved into the slot by the transition; dropped unused (never the last reference:
        // `run` holds another) if the transition refuses.
        let erased: Arc<dyn ErasedRun<P, E>> = run.clone();
        let mut refusal = None;
        let started = panic
            .catch(|| {
                run.topic.update(|slot| {
                    // Read under the key's lock, which orders it against `shutdown`: either
                    // shutdown sees this run running and stops it, or this sees the flag (its
                    // store precedes shutdown's visit to this key, or to the key table if this
                    // key was not there).
                    if common.is_shut_down() {
                        refusal = Some(Refusal::ShutDown);
                        return None;
                    }
                    if let Some(running) = slot.and_then(|slot| slot.run.as_ref()) {
                        refusal = Some(Refusal::Busy(running.core().id()));
                        return None;
                    }
                    // Under the key's lock: the runs of one key get increasing ids in start
                    // order.
                    let id = RunId::new(common.next_run.fetch_add(1, Ordering::Relaxed));
                    core.set_id(id);
                    Some(Slot::started(id, erased))
                })
            })
            // A listener's panic can only come after the transition: the run started.
            .unwrap_or(true);
        if !started {
            return Err(refusal.unwrap_or(Refusal::ShutDown));
        }
        Ok(Begun { run, core, live })
    }

    fn shutdown(&self, reason: Option<Reason>) -> Shutdown {
        self.common.shut_down.store(true, Ordering::SeqCst);
        // Every run is stopped even if a listener or an abort callback panics on the way; the
        // first panic resumes once they all are.
        let mut panic = Deferred::default();
        // No key is cloned (user code that may panic): a shutdown needs only the runs.
        self.topics.for_each(|_, slot| {
            if let Some(run) = slot.as_deref().and_then(|slot| slot.run.as_ref()) {
                // Stale is fine: the run ended by itself meanwhile.
                run.stop(reason.clone(), &mut panic);
            }
        });
        // Every run is stopped and none can start: streams may end once they have their key's
        // final state, and whoever waits for the shutdown to begin is told.
        panic.catch(|| self.common.shutdown_signal.abort(reason));
        let shutdown = Shutdown::new(Arc::clone(&self.common.live));
        panic.resume();
        shutdown
    }

    fn shrink_to_fit(&self) {
        self.topics.shrink_to_fit();
        // Each stream keeps a callback on the shutdown signal while it lives: their list grows
        // to the most streams open at once.
        self.common.shutdown_signal.shrink_to_fit();
        if let Some(retention) = &self.retention {
            retention.shrink_to_fit();
        }
    }
}

/// The key an [`EventStream`](crate::EventStream) watches.
struct WatchedKey<K, P, E, H> {
    // Declared first: the listener goes before the lease.
    _subscription: TopicSubscription<K, Slot<P, E>, H>,
    topic: Topic<K, Slot<P, E>, H>,
}

impl<K, P, E, H> Watched<P, E> for WatchedKey<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Send + Sync + 'static,
{
    fn last(&self) -> Option<Arc<Slot<P, E>>> {
        self.topic.last()
    }
}

impl<K, P, E, H> fmt::Debug for Inner<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRunnerRepository")
            // The key table's own Debug never waits for its lock.
            .field("keys", &self.topics)
            .field("live_tasks", &self.common.live.get())
            .field("shut_down", &self.common.is_shut_down())
            .field("retention", &self.retention)
            .field("spawner", &DebugSpawn)
            .finish_non_exhaustive()
    }
}
