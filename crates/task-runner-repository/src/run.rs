//! One run: its shared record ([`RunCore`]), its lease on the key ([`Run`]), the transitions it
//! makes, and what a key's subject holds ([`Slot`]).
//!
//! Every transition is a compare-and-set on the key's subject (`Topic::update`): it succeeds
//! only while the slot holds this very run, so a stale node, a stopped run's late item or its
//! late completion never touches a later run. The closures given to `update` run under the
//! key's lock, so they run no user code: they move values and clone `Arc`s, and anything they
//! decline to use is dropped by the caller afterwards.

use std::fmt;
use std::hash::BuildHasher;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use keyrunner_pub_sub::Topic;

use crate::abort::{AbortSignal, SignalCore, SignalHost};
use crate::bounds::{Key, Value};
use crate::event::{Event, Position};
use crate::handle::RunHandle;
use crate::item::Update;
use crate::log::{Log, Next};
use crate::panics::{Deferred, Payload, discard, panicked};
use crate::retention::Retention;
use crate::state::{Outcome, Reason, RunId, State};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, lock};
use crate::task::TaskContext;
use crate::wait::{WaitList, WaitSlot};

/// What a key's subject holds: the event that made it (what listeners receive) and, while the
/// key runs, the run itself.
pub(crate) struct Slot<P, E> {
    pub(crate) event: Event<P, E>,
    pub(crate) run: Option<Arc<dyn ErasedRun<P, E>>>,
}

impl<P, E> Slot<P, E> {
    /// A key that never ran.
    pub(crate) fn never() -> Self {
        Self {
            event: Event::State {
                position: Position::NEVER,
                state: State::default(),
            },
            run: None,
        }
    }

    /// The slot of run `id`'s start.
    pub(crate) fn started(id: RunId, run: Arc<dyn ErasedRun<P, E>>) -> Self {
        Self {
            event: Event::State {
                position: Position::at(id, 0),
                state: State::Running {
                    run: id,
                    progress: None,
                },
            },
            run: Some(run),
        }
    }

    /// Whether this slot was made by a progress item (not by a run's start or end).
    pub(crate) fn is_progress(&self) -> bool {
        self.run.is_some()
            && match &self.event {
                Event::Delta { .. } => true,
                Event::State { state, .. } => state.progress().is_some(),
            }
    }

    /// The key's state, with the running run's accumulated progress folded in.
    pub(crate) fn state(&self) -> State<P, E> {
        match &self.run {
            Some(run) => State::Running {
                run: run.core().id(),
                progress: run.core().progress().1,
            },
            None => self.event.state().cloned().unwrap_or_default(),
        }
    }

    /// The key's state as one event: the slot's own, or, for a progress slot, a `State` event
    /// carrying the accumulated progress (a resync).
    pub(crate) fn resync(&self) -> Event<P, E> {
        match &self.run {
            Some(run) if self.is_progress() => run.core().resync(),
            _ => self.event.clone(),
        }
    }
}

/// The placeholder a reused allocation holds between two states: a key that never ran.
impl<P, E> Default for Slot<P, E> {
    fn default() -> Self {
        Self::never()
    }
}

/// The part of a run every party shares, whatever the repository's key and hasher types: its
/// id, its abort signal, its outcome and the handles waiting for it, and its progress.
pub(crate) struct RunCore<P, E> {
    /// Taken inside the compare-and-set that starts the run, under the key's lock, so the runs
    /// of one key get increasing ids in the order they start. Read only after that.
    id: AtomicU64,
    signal: SignalCore,
    state: Mutex<RunState<P, E>>,
    /// Set once the stream has been dropped, before the waiting handles are taken (under
    /// `state`'s lock) to be woken: what handles wait for.
    finished: AtomicBool,
    /// Set when the executor dropped the driver without polling it.
    refused: AtomicBool,
    /// Set by a stopper before it computes the run's final progress: from then on the run
    /// publishes nothing, so that progress stays final.
    closing: AtomicBool,
    /// How many deltas the log holds before it folds the older ones into its base.
    max_deltas: usize,
}

struct RunState<P, E> {
    /// Written once, by whoever wins the transition that ends the run, inside that transition.
    outcome: Option<Outcome<E>>,
    /// The handles awaiting the run's end.
    waiters: WaitList,
    log: Log<P>,
}

impl<P: Value, E: Value> SignalHost for RunCore<P, E> {
    fn signal_core(&self) -> &SignalCore {
        &self.signal
    }
}

impl<P: Value, E: Value> RunCore<P, E> {
    pub(crate) fn new(max_deltas: usize) -> Self {
        Self {
            id: AtomicU64::new(0),
            signal: SignalCore::default(),
            state: Mutex::new(RunState {
                outcome: None,
                waiters: WaitList::default(),
                log: Log::default(),
            }),
            finished: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            max_deltas,
        }
    }

    /// The run's signal: it lives in this record.
    pub(crate) fn signal(self: &Arc<Self>) -> AbortSignal {
        AbortSignal::of(Arc::clone(self) as Arc<dyn SignalHost>)
    }
}

impl<P, E> RunCore<P, E> {
    pub(crate) fn id(&self) -> RunId {
        RunId::new(self.id.load(Ordering::Relaxed))
    }

    /// Names the run; called once, inside the transition that starts it.
    pub(crate) fn set_id(&self, id: RunId) {
        self.id.store(id.get(), Ordering::Relaxed);
    }

    /// The last item's sequence number.
    pub(crate) fn seq(&self) -> u64 {
        lock(&self.state).log.seq()
    }

    pub(crate) fn signal_core(&self) -> &SignalCore {
        &self.signal
    }

    /// The progress now: its sequence number and value. Folds outside the lock (user code)
    /// and keeps the result as the log's base, so the next reader need not fold again.
    pub(crate) fn progress(&self) -> (u64, Option<Arc<P>>) {
        let folding = lock(&self.state).log.folding();
        let seq = folding.seq;
        if folding.is_trivial() {
            return (seq, folding.fold());
        }
        let value = folding.fold();
        if let Some(value) = &value {
            let old = lock(&self.state).log.install(seq, Arc::clone(value));
            drop(old);
        }
        (seq, value)
    }

    /// The run's progress now as a `State` event: what a watcher that fell behind takes.
    pub(crate) fn resync(&self) -> Event<P, E> {
        let run = self.id();
        let (seq, progress) = self.progress();
        Event::State {
            position: Position::at(run, seq),
            state: State::Running { run, progress },
        }
    }

    /// What a cursor that has seen this run's items up to `seen` reads next.
    pub(crate) fn next_after(&self, seen: u64) -> Next<P> {
        lock(&self.state).log.next_after(seen)
    }

    pub(crate) fn outcome(&self) -> Option<Outcome<E>> {
        lock(&self.state).outcome.clone()
    }

    pub(crate) fn was_refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    pub(crate) fn refuse(&self) {
        self.refused.store(true, Ordering::Release);
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// The run is over and its stream dropped: a signal that was not fired never will be (its
    /// callbacks and waiters go), and the handles are told.
    pub(crate) fn finish(&self, by_itself: bool) {
        if by_itself {
            // A stopped run's signal is fired by its stopper, who may not have done so yet: its
            // callbacks must stay for that.
            self.signal.close();
        }
        let waiters = {
            let mut state = lock(&self.state);
            self.finished.store(true, Ordering::Release);
            state.waiters.take()
        };
        // Woken outside the lock: a waker may run anything, this run's handles included.
        waiters.wake_all();
    }

    /// A handle's poll: the outcome once finished, or `Pending` with the waker registered.
    pub(crate) fn poll_outcome(
        &self,
        slot: &mut Option<WaitSlot>,
        cx: &mut Context<'_>,
    ) -> Poll<Outcome<E>> {
        if !self.is_finished() {
            let mut state = lock(&self.state);
            // Looked at again under the lock: `finish` sets the flag before it takes the
            // waiters under this lock, so either it takes this waker or this sees the flag.
            if !self.is_finished() {
                let replaced = state.waiters.register(slot, cx.waker());
                drop(state);
                drop(replaced);
                return Poll::Pending;
            }
        }
        // `finish` took the waiters: the slot is gone.
        *slot = None;
        // Every path that finishes a run records an outcome first; `Lost` is a safe default
        // should a driver ever be torn down in a way that skipped it.
        Poll::Ready(self.outcome().unwrap_or(Outcome::Lost))
    }

    /// Frees a handle's waiter slot.
    pub(crate) fn unregister(&self, slot: WaitSlot) {
        let removed = lock(&self.state).waiters.remove(slot);
        drop(removed);
    }

    /// Registers the driver's waker on the run's signal; returns whether the run was stopped.
    pub(crate) fn register_driver(&self, slot: &mut Option<WaitSlot>, waker: &Waker) -> bool {
        self.signal.is_aborted() || self.signal.register(slot, waker)
    }
}

/// A run seen from a key's slot, whatever the repository's key and hasher types.
pub(crate) trait ErasedRun<P, E>: Send + Sync {
    fn core(&self) -> &Arc<RunCore<P, E>>;

    /// Stops this run if it still owns its key: records `Stopped { reason }` and idles the key,
    /// then fires the signal. Returns whether this call stopped it. Panics of listeners and
    /// callbacks are caught into `panic`.
    fn stop(&self, reason: Option<Reason>, panic: &mut Deferred) -> bool;

    /// A handle to this run.
    fn handle(self: Arc<Self>) -> RunHandle<E>;
}

/// What became of an item the driver published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// It is the run's progress now.
    Yes,
    /// The run no longer owns its key (it was stopped or superseded): discarded.
    Stale,
    /// A stopper is ending the run: discarded, and the run's signal is about to fire.
    Closing,
}

/// A run seen from its driver.
pub(crate) trait RunOps<K, P, E>: ErasedRun<P, E> {
    /// The context the task is called with.
    fn context(&self) -> TaskContext<K>;

    /// The key the run belongs to.
    fn key(&self) -> &K;

    /// Applies `update` if this run still owns its key and is not being stopped; otherwise the
    /// item is discarded. `Err` carries a panic of the progress type's own code (a fold).
    fn publish(&self, update: Update<P>) -> Result<Published, Payload>;

    /// Ends the run with `outcome` if it still owns its key; returns whether it did.
    fn conclude(&self, outcome: &Outcome<E>, panic: &mut Deferred) -> bool;

    /// This run, seen from a slot.
    fn erased(self: Arc<Self>) -> Arc<dyn ErasedRun<P, E>>;
}

/// A run: its core plus a lease on its key, so the key (and so the run's outcome) stays
/// remembered while the driver, a node or any handle lives.
pub(crate) struct Run<K, P, E, H> {
    /// Shared apart from the lease, so the driver can let go of the key before it reports.
    pub(crate) core: Arc<RunCore<P, E>>,
    pub(crate) topic: Topic<K, Slot<P, E>, H>,
    retention: Option<Arc<Retention<K, P, E, H>>>,
}

impl<K, P, E, H> Run<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(
        core: Arc<RunCore<P, E>>,
        topic: Topic<K, Slot<P, E>, H>,
        retention: Option<Arc<Retention<K, P, E, H>>>,
    ) -> Self {
        Self {
            core,
            topic,
            retention,
        }
    }

    /// Whether `slot` holds this very run.
    fn owns(&self, slot: &Slot<P, E>) -> bool {
        slot.run
            .as_ref()
            .is_some_and(|run| Arc::ptr_eq(run.core(), &self.core))
    }

    /// Ends the run with `outcome` if it still owns its key: idles the key with the run's final
    /// progress in one compare-and-set, which also records the outcome, so handle, state and
    /// listeners agree.
    ///
    /// The final progress is read inside the transition when no delta needs folding; otherwise
    /// it is folded outside any lock (user code) and the transition retried, checking that no
    /// item came in between. Only the driver publishes, and not once a stopper has set
    /// `closing`: a stopper retries at most once more, the driver never. The transition makes
    /// the final progress the log's base, so nobody folds this run's progress again.
    ///
    /// A fold that panics is the progress type's panic, caught like the task's: the final
    /// progress is `None`, a run that completed ends as `Panicked`, and any other end (failed,
    /// stopped, lost) keeps its outcome; the panic goes no further.
    fn end(&self, outcome: &Outcome<E>, panic: &mut Deferred) -> bool {
        let id = self.core.id();
        let mut folded: Option<(u64, Option<Arc<P>>)> = None;
        // The outcome recorded instead of `outcome`, should the fold of a completed run panic.
        let mut broken: Option<Outcome<E>> = None;
        // The log's base before the final progress replaced it.
        let mut retired = None;
        loop {
            let mut fold_first = false;
            let recorded = broken.as_ref().unwrap_or(outcome);
            let ended = panic
                .catch(|| {
                    self.topic.update(|slot| {
                        let slot = slot?;
                        if !self.owns(slot) {
                            return None;
                        }
                        let mut state = lock(&self.core.state);
                        let seq = state.log.seq();
                        let progress = match &folded {
                            Some((at, progress)) if *at == seq => Some(progress.clone()),
                            // An item came in since the fold (before a stopper's `closing`).
                            Some(_) => None,
                            // No delta to fold: the base is the final progress.
                            None => state.log.current(),
                        };
                        // `None`: a fold is needed first, outside the lock.
                        let Some(progress) = progress else {
                            fold_first = true;
                            return None;
                        };
                        state.outcome = Some(recorded.clone());
                        if folded.is_some() {
                            retired = state.log.settle(seq, progress.clone());
                        }
                        drop(state);
                        Some(Slot {
                            event: Event::State {
                                position: Position::at(id, seq + 1),
                                state: State::Idle {
                                    last: Some(recorded.clone()),
                                    progress,
                                },
                            },
                            run: None,
                        })
                    })
                })
                // A listener's panic can only come after the transition: it happened.
                .unwrap_or(true);
            if fold_first {
                let folding = lock(&self.core.state).log.folding();
                let seq = folding.seq;
                let value = match panic::catch_unwind(AssertUnwindSafe(|| folding.fold())) {
                    Ok(value) => value,
                    Err(payload) => {
                        if matches!(outcome, Outcome::Completed) {
                            broken = Some(panicked(payload));
                        } else {
                            discard(payload);
                        }
                        None
                    }
                };
                // The previous attempt's value is dropped here, with no lock held.
                drop(folded.replace((seq, value)));
                continue;
            }
            drop((folded, retired));
            if ended && let Some(retention) = &self.retention {
                panic.catch(|| retention.retain(&self.topic, id));
            }
            return ended;
        }
    }

    /// Folds the older deltas into the base once the log holds more than the bound.
    fn compact(&self) -> Result<(), Payload> {
        let max = self.core.max_deltas;
        let folding = {
            let state = lock(&self.core.state);
            if !state.log.over(max) {
                return Ok(());
            }
            state.log.folding()
        };
        let seq = folding.seq;
        let value = panic::catch_unwind(AssertUnwindSafe(|| folding.fold()))?;
        let (old, evicted) = {
            let mut state = lock(&self.core.state);
            let old = value.and_then(|value| state.log.install(seq, value));
            (old, state.log.trim(max / 2))
        };
        drop((old, evicted));
        Ok(())
    }
}

impl<K, P, E, H> ErasedRun<P, E> for Run<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Send + Sync + 'static,
{
    fn core(&self) -> &Arc<RunCore<P, E>> {
        &self.core
    }

    fn stop(&self, reason: Option<Reason>, panic: &mut Deferred) -> bool {
        self.core.closing.store(true, Ordering::SeqCst);
        let stopped = self.end(
            &Outcome::Stopped {
                reason: reason.clone(),
            },
            panic,
        );
        if stopped {
            // The key is idle now: even if a listener panicked, the signal must fire and the
            // driver (one of the signal's waiters) must wake to drop the stream.
            panic.catch(|| self.core.signal.fire(reason));
        }
        stopped
    }

    fn handle(self: Arc<Self>) -> RunHandle<E> {
        RunHandle::new(self)
    }
}

impl<K, P, E, H> RunOps<K, P, E> for Run<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Send + Sync + 'static,
{
    fn context(&self) -> TaskContext<K> {
        TaskContext::new(self.topic.key().clone(), self.core.id(), self.core.signal())
    }

    fn key(&self) -> &K {
        self.topic.key()
    }

    fn publish(&self, update: Update<P>) -> Result<Published, Payload> {
        let id = self.core.id();
        let (value, fold) = match update {
            Update::Snapshot(value) => (value, None),
            Update::Delta(value, fold) => (value, Some(fold)),
        };
        let mut value = Some(value);
        let mut evicted = None;
        // A snapshot reuses the allocation of one nobody holds any more: what it held, or the
        // spare that was still shared, is dropped after the lock.
        let mut replaced = None;
        let mut shared_spare = None;
        let mut closing = false;
        let published = self.topic.update(|slot| {
            let slot = slot?;
            if !self.owns(slot) {
                return None;
            }
            if self.core.closing.load(Ordering::SeqCst) {
                closing = true;
                return None;
            }
            let value = value.take()?;
            let mut state = lock(&self.core.state);
            let event = match fold {
                None => {
                    let value = match state.log.take_spare() {
                        Some(mut spare) => match Arc::get_mut(&mut spare) {
                            Some(unused) => {
                                replaced = Some(std::mem::replace(unused, value));
                                spare
                            }
                            None => {
                                shared_spare = Some(spare);
                                Arc::new(value)
                            }
                        },
                        None => Arc::new(value),
                    };
                    let (seq, older) = state.log.snapshot(Arc::clone(&value));
                    evicted = Some(older);
                    Event::State {
                        position: Position::at(id, seq),
                        state: State::Running {
                            run: id,
                            progress: Some(value),
                        },
                    }
                }
                Some(fold) => {
                    let value = Arc::new(value);
                    Event::Delta {
                        position: Position::at(id, state.log.delta(Arc::clone(&value), fold)),
                        delta: value,
                    }
                }
            };
            drop(state);
            Some(Slot {
                event,
                run: slot.run.clone(),
            })
        });
        // Dropped here, not inside the transition: a discarded item's destructor is user code.
        drop((value, evicted, replaced, shared_spare));
        if !published {
            return Ok(if closing {
                Published::Closing
            } else {
                Published::Stale
            });
        }
        if fold.is_some() {
            self.compact()?;
        }
        Ok(Published::Yes)
    }

    fn conclude(&self, outcome: &Outcome<E>, panic: &mut Deferred) -> bool {
        self.end(outcome, panic)
    }

    fn erased(self: Arc<Self>) -> Arc<dyn ErasedRun<P, E>> {
        self
    }
}

impl<P, E> fmt::Debug for Slot<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("position", &self.event.position())
            .field("running", &self.run.is_some())
            .finish_non_exhaustive()
    }
}
