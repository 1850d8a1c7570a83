//! A run owned by this replica: its [`Owner`] (the task's stream, the owner's writes, the
//! lease) and the [`RunHandle`] that resolves to its outcome.
//!
//! The driver keeps at most one write in flight. Items the stream yields while a write is in
//! flight are queued (up to [`MAX_QUEUED`], then the stream is not polled until the write
//! returns) and all go in the next write: one round trip per batch, every item kept, and each
//! write renews the lease. With nothing to write, the driver renews every TTL/3. It demotes
//! itself — fires the abort signal with [`lease_lost`], drops the stream, ends as `Lost` — at
//! a local monotonic deadline, TTL − TTL/10 after sending its last accepted write: before Redis,
//! whose deadline runs from when it *received* that write, could give the key away.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener};
use futures_core::Stream;
use keyrunner_task_runner_repository::{
    AbortController, AbortSignal, Outcome, Reason, RunId, TaskContext, WaitForAbort,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode};
use crate::error::{Error, ErrorKind};
use crate::item::sealed::Sealed as _;
use crate::item::{IntoProgress, Update};
use crate::runtime::Sleep;
use crate::store::{Answer, Batch, Stopped, Store, Written};

/// Items queued beyond this stop the driver from polling the stream until the write in flight
/// returns (backpressure instead of unbounded memory).
pub(crate) const MAX_QUEUED: usize = 1024;

/// Items taken from the stream in one poll before the driver yields to its executor.
const POLL_BUDGET: usize = 256;

/// The reason a run's abort signal fires with when its replica lost the lease: it could not
/// renew in time (Redis unreachable, or this process paused), the lease was reaped, or Redis
/// lost its data.
///
/// ```
/// assert_eq!(keyrunner_redis::lease_lost().as_str(), "lease lost");
/// ```
#[must_use]
pub fn lease_lost() -> Reason {
    Reason::from("lease lost")
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A caught panic payload.
pub(crate) type Payload = Box<dyn Any + Send>;

/// Fires `abort` with `reason`. The signal's callbacks are user code: their first panic is caught
/// and returned, so that whoever fires the signal finishes its own step first (stops the other
/// runs, records the outcome, ...) and then decides what to do with it.
#[must_use = "a callback's panic is either resumed or discarded"]
pub(crate) fn fire(abort: &AbortController, reason: Option<Reason>) -> Option<Payload> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        abort.abort(reason);
    }))
    .err()
}

/// Drops a panic nobody called for (a signal fired by a remote stop, a reap or a lost lease);
/// a payload whose destructor panics too is leaked rather than allowed to unwind.
pub(crate) fn discard(payload: Option<Payload>) {
    if let Some(payload) = payload
        && let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload)))
    {
        std::mem::forget(again);
    }
}

/// Where a run's outcome lands once known; every handle waits on it.
pub(crate) struct Slot<E> {
    outcome: Mutex<Option<Outcome<E>>>,
    event: Event,
}

impl<E> Slot<E> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            outcome: Mutex::new(None),
            event: Event::new(),
        })
    }

    /// Records `outcome` unless one is recorded already; wakes every waiting handle.
    pub(crate) fn set(&self, outcome: Outcome<E>) -> bool {
        {
            let mut slot = lock(&self.outcome);
            if slot.is_some() {
                return false;
            }
            *slot = Some(outcome);
        }
        self.event.notify(usize::MAX);
        true
    }

    pub(crate) fn get(&self) -> Option<Outcome<E>> {
        lock(&self.outcome).clone()
    }

    pub(crate) fn is_set(&self) -> bool {
        lock(&self.outcome).is_some()
    }
}

/// How a run was ended from outside its driver.
pub(crate) enum Ending<E> {
    /// Redis has recorded this outcome already: a stop (from any replica) or a reap.
    Recorded(Outcome<E>),
    /// This replica asks the run to stop (shutdown, or the repository was dropped): the driver
    /// writes the stop.
    Requested(Option<Reason>),
    /// Redis lost its data: the run ends as `Lost`, with nothing to write.
    DataLoss,
}

/// What a local run shares between its driver, its handles and the replica.
pub(crate) struct RunShared<E> {
    pub(crate) member: String,
    pub(crate) fence: u64,
    /// The epoch the run was acquired under; every write of the run carries it.
    pub(crate) epoch: Arc<str>,
    pub(crate) abort: AbortController,
    ending: Mutex<Option<Ending<E>>>,
    pub(crate) slot: Arc<Slot<E>>,
    /// The driver was dropped before its first poll: the spawner refused it.
    refused: AtomicBool,
}

impl<E> RunShared<E> {
    pub(crate) fn new(member: String, fence: u64, epoch: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            member,
            fence,
            epoch,
            abort: AbortController::new(),
            ending: Mutex::new(None),
            slot: Slot::new(),
            refused: AtomicBool::new(false),
        })
    }

    /// Ends the run from outside its driver (the first ending wins) and fires its signal; the
    /// first panic of the signal's callbacks is returned (see [`fire`]).
    #[must_use = "a callback's panic is either resumed or discarded"]
    pub(crate) fn end(&self, ending: Ending<E>, reason: Option<Reason>) -> Option<Payload> {
        {
            let mut slot = lock(&self.ending);
            if slot.is_some() || self.slot.is_set() {
                return None;
            }
            *slot = Some(ending);
        }
        fire(&self.abort, reason)
    }

    fn take_ending(&self) -> Option<Ending<E>> {
        lock(&self.ending).take()
    }

    pub(crate) fn was_refused(&self) -> bool {
        self.refused.load(Ordering::SeqCst)
    }
}

/// The runs this replica owns, by member: how a stop or a reap heard on the control channel
/// finds its run.
pub(crate) struct LocalRuns<E> {
    inner: Mutex<Runs<E>>,
}

struct Runs<E> {
    runs: HashMap<String, Arc<RunShared<E>>>,
    /// Acquisitions in flight, by member.
    acquiring: HashMap<String, InFlightAcquisitions<E>>,
}

/// The acquisitions of one member in flight: how many, and the ends heard meanwhile of runs of
/// the member not registered yet (a stop that landed before the owner took its acquisition's
/// answer), by fence.
struct InFlightAcquisitions<E> {
    count: usize,
    ended: Vec<(u64, Outcome<E>)>,
}

impl<E> LocalRuns<E> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Runs {
                runs: HashMap::new(),
                acquiring: HashMap::new(),
            }),
        }
    }

    /// An acquisition of `member` begins: until the guard drops, the end of a run of `member`
    /// heard before it is registered is kept for [`insert`](Self::insert).
    pub(crate) fn acquiring(&self, member: &str) -> Acquiring<'_, E> {
        lock(&self.inner)
            .acquiring
            .entry(member.to_owned())
            .or_insert_with(|| InFlightAcquisitions {
                count: 0,
                ended: Vec::new(),
            })
            .count += 1;
        Acquiring {
            runs: self,
            member: member.to_owned(),
        }
    }

    /// Registers `run`; the end of it heard while its acquisition was being answered, if any.
    pub(crate) fn insert(&self, run: Arc<RunShared<E>>) -> Option<Outcome<E>> {
        let mut inner = lock(&self.inner);
        let ended = inner.acquiring.get_mut(&run.member).and_then(|acquiring| {
            let at = acquiring
                .ended
                .iter()
                .position(|(fence, _)| *fence == run.fence)?;
            Some(acquiring.ended.swap_remove(at).1)
        });
        inner.runs.insert(run.member.clone(), run);
        ended
    }

    /// Run `fence` of `member` ended elsewhere with `outcome`: the run, if it is registered; if
    /// an acquisition of `member` is in flight, the end is kept for it instead.
    pub(crate) fn ended_elsewhere(
        &self,
        member: &str,
        fence: u64,
        outcome: Outcome<E>,
    ) -> Option<(Arc<RunShared<E>>, Outcome<E>)> {
        let mut inner = lock(&self.inner);
        if let Some(run) = inner.runs.get(member).filter(|run| run.fence == fence) {
            return Some((Arc::clone(run), outcome));
        }
        if let Some(acquiring) = inner.acquiring.get_mut(member) {
            acquiring.ended.push((fence, outcome));
        }
        None
    }

    /// The run of `member`, if it is run `fence` (any run for `None`).
    pub(crate) fn get(&self, member: &str, fence: Option<u64>) -> Option<Arc<RunShared<E>>> {
        lock(&self.inner)
            .runs
            .get(member)
            .filter(|run| fence.is_none_or(|fence| run.fence == fence))
            .cloned()
    }

    pub(crate) fn remove(&self, member: &str, fence: u64) {
        let runs = &mut lock(&self.inner).runs;
        if runs.get(member).is_some_and(|run| run.fence == fence) {
            runs.remove(member);
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<RunShared<E>>> {
        lock(&self.inner).runs.values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).runs.len()
    }

    /// How many, without waiting for the lock (for `Debug`).
    pub(crate) fn try_len(&self) -> Option<usize> {
        self.inner.try_lock().ok().map(|inner| inner.runs.len())
    }
}

/// An acquisition in flight (see [`LocalRuns::acquiring`]).
pub(crate) struct Acquiring<'a, E> {
    runs: &'a LocalRuns<E>,
    member: String,
}

impl<E> Drop for Acquiring<'_, E> {
    fn drop(&mut self) {
        let mut inner = lock(&self.runs.inner);
        if let Some(acquiring) = inner.acquiring.get_mut(&self.member) {
            acquiring.count -= 1;
            if acquiring.count == 0 {
                inner.acquiring.remove(&self.member);
            }
        }
    }
}

/// The reason a run's signal fires with when Redis recorded `outcome` for it elsewhere.
pub(crate) fn reason_of<E>(outcome: &Outcome<E>) -> Option<Reason> {
    match outcome {
        Outcome::Stopped { reason } => reason.clone(),
        _ => Some(lease_lost()),
    }
}

/// Counts the drivers alive, and the acquisitions in flight (each may start one more);
/// `shutdown` waits for both to be zero.
#[derive(Default)]
pub(crate) struct Live {
    count: AtomicUsize,
    starting: AtomicUsize,
    event: Event,
}

impl Live {
    pub(crate) fn enter(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn exit(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.event.notify(usize::MAX);
        }
    }

    /// An acquisition begins; it counts until the guard drops (after its driver, if any, has
    /// entered).
    pub(crate) fn starting(&self) -> Starting<'_> {
        self.starting.fetch_add(1, Ordering::SeqCst);
        Starting(self)
    }

    /// The drivers alive.
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Whether no driver is alive and no acquisition is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.starting.load(Ordering::SeqCst) == 0 && self.count.load(Ordering::SeqCst) == 0
    }

    pub(crate) fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

/// An acquisition in flight (see [`Live::starting`]).
pub(crate) struct Starting<'a>(&'a Live);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if self.0.starting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.event.notify(usize::MAX);
        }
    }
}

/// Resolves to a run's outcome, once its stream has been dropped (for a run on another replica:
/// once this replica has heard it end).
///
/// A run on this replica ends with the outcome Redis recorded for it; a run whose owner lost the
/// lease ends as [`Outcome::Lost`]. Cloning gives another handle to the same run; any number of
/// parties can await it.
#[must_use = "dropping a run handle detaches from the run; the run goes on"]
pub struct RunHandle<E> {
    run: RunId,
    slot: Arc<Slot<E>>,
    signal: Option<AbortSignal>,
    listener: Option<EventListener>,
    /// Keeps what feeds a remote handle's slot alive (the key's watch).
    keep: Option<Arc<dyn Any + Send + Sync>>,
}

impl<E> RunHandle<E> {
    pub(crate) fn local(run: &RunShared<E>) -> Self {
        Self {
            run: RunId::new(run.fence),
            slot: Arc::clone(&run.slot),
            signal: Some(run.abort.signal()),
            listener: None,
            keep: None,
        }
    }

    pub(crate) fn remote(fence: u64, slot: Arc<Slot<E>>, keep: Arc<dyn Any + Send + Sync>) -> Self {
        Self {
            run: RunId::new(fence),
            slot,
            signal: None,
            listener: None,
            keep: Some(keep),
        }
    }

    /// The run's id (its fence).
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// Whether the run is driven by this replica.
    #[must_use]
    pub fn is_local(&self) -> bool {
        self.signal.is_some()
    }

    /// The run's abort signal, for a run driven by this replica.
    #[must_use]
    pub fn abort_signal(&self) -> Option<AbortSignal> {
        self.signal.clone()
    }

    /// Whether the outcome is known.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.slot.is_set()
    }

    /// The outcome, if known.
    #[must_use]
    pub fn outcome(&self) -> Option<Outcome<E>> {
        self.slot.get()
    }

    /// Drops the handle: the run goes on.
    pub fn detach(self) {}
}

impl<E> Clone for RunHandle<E> {
    fn clone(&self) -> Self {
        Self {
            run: self.run,
            slot: Arc::clone(&self.slot),
            signal: self.signal.clone(),
            listener: None,
            keep: self.keep.clone(),
        }
    }
}

impl<E> Future for RunHandle<E> {
    type Output = Outcome<E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<E>> {
        loop {
            if let Some(outcome) = self.slot.get() {
                self.listener = None;
                return Poll::Ready(outcome);
            }
            match &mut self.listener {
                None => self.listener = Some(self.slot.event.listen()),
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

impl<E: fmt::Debug> fmt::Debug for RunHandle<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle")
            .field("run", &self.run)
            .field("local", &self.is_local())
            .field(
                "outcome",
                &self.slot.outcome.try_lock().ok().map(|o| o.clone()),
            )
            .finish_non_exhaustive()
    }
}

/// The future that drives one run of this replica: it polls the task's stream, writes its items
/// and its end to Redis, and keeps its lease.
///
/// A spawner given to [`Builder::spawner`](crate::Builder::spawner) runs it to completion in
/// the background (`tokio::spawn(driver)`, `executor.spawn(driver).detach()`). Dropping it without
/// polling it refuses the run: the key is released as `Lost` and `run` returns
/// [`RunError::Spawn`](crate::RunError::Spawn).
#[must_use = "a driver does nothing unless polled; dropping it refuses its run"]
pub struct Driver {
    future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
}

impl Driver {
    pub(crate) fn new(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            future: Box::pin(future),
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.future.as_mut().poll(cx)
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// The write a driver has in flight (or must retry).
#[derive(Clone)]
enum Write {
    Renew,
    Progress(Arc<Batch>),
    Finish {
        batch: Arc<Batch>,
        outcome: Arc<str>,
    },
    Stop(Option<Reason>),
}

enum Reply {
    Written(Result<Answer<Written>, Error>),
    Stopped(Result<Answer<Stopped>, Error>),
}

struct InFlight {
    write: Write,
    sent: Instant,
    future: Pin<Box<dyn Future<Output = Reply> + Send>>,
}

/// Called with the epoch Redis reported when a write was refused for its epoch.
pub(crate) type OnEpoch = Arc<dyn Fn(String) + Send + Sync>;

/// The owner of one local run: the task's stream, the owner's writes, the lease.
pub(crate) struct Owner<K, P, E, F, St, M> {
    run: Arc<RunShared<E>>,
    store: Arc<Store>,
    runs: Arc<LocalRuns<E>>,
    live: Arc<Live>,
    on_epoch: OnEpoch,
    start: Option<(F, K)>,
    stream: Option<Pin<Box<St>>>,
    aborted: WaitForAbort,
    /// Encoded items no write carries yet.
    queue: Vec<String>,
    /// The task yields deltas: `accumulated` is every delta so far, folded.
    deltas: bool,
    accumulated: Option<P>,
    /// The last snapshot, encoded (what the key's progress becomes).
    last_snapshot: String,
    call: Option<InFlight>,
    /// A write that failed (Redis unreachable or slow) and is sent again at `next_write`.
    retry: Option<Write>,
    /// The last sequence Redis accepted from this run.
    seq: u64,
    /// How the stream ended, once it has: recorded by the finish write.
    ended: Option<Outcome<E>>,
    /// When to renew, or to retry a failed write.
    next_write: Sleep,
    /// When to demote: past it Redis could give the key away soon.
    deadline: Sleep,
    /// This replica asked the run to stop; its stop is being written.
    stopping: bool,
    finished: bool,
    types: PhantomData<fn() -> (P, M)>,
}

// The driver never pins its fields: the stream and the writes are boxed, and the task function is
// only ever moved out. So pinning the driver promises nothing about them.
impl<K, P, E, F, St, M> Unpin for Owner<K, P, E, F, St, M> {}

impl<K, P, E, F, St, M> Owner<K, P, E, F, St, M>
where
    K: Send + 'static,
    P: Serialize + Send + 'static,
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: FnOnce(TaskContext<K>) -> St + Send + 'static,
    St: Stream + Send + 'static,
    St::Item: IntoProgress<P, E, M>,
    M: 'static,
{
    /// A driver for `run`, acquired with sequence `seq` by a call sent at `sent`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        run: Arc<RunShared<E>>,
        store: Arc<Store>,
        runs: Arc<LocalRuns<E>>,
        live: Arc<Live>,
        on_epoch: OnEpoch,
        task: F,
        key: K,
        seq: u64,
        sent: Instant,
    ) -> Self {
        live.enter();
        let aborted = run.abort.signal().aborted();
        let next_write = store.rt.sleep_until(sent + store.ttl / 3);
        let deadline = store.rt.sleep_until(lease_deadline(sent, store.ttl));
        Self {
            run,
            store,
            runs,
            live,
            on_epoch,
            start: Some((task, key)),
            stream: None,
            aborted,
            queue: Vec::new(),
            deltas: false,
            accumulated: None,
            last_snapshot: String::new(),
            call: None,
            retry: None,
            seq,
            ended: None,
            next_write,
            deadline,
            stopping: false,
            finished: false,
            types: PhantomData,
        }
    }

    /// Calls the task function (a panic ends the run as `Panicked`).
    fn begin(&mut self, task: F, key: K) {
        let cx = TaskContext::new(key, RunId::new(self.run.fence), self.run.abort.signal());
        match panic::catch_unwind(AssertUnwindSafe(|| task(cx))) {
            Ok(stream) => self.stream = Some(Box::pin(stream)),
            Err(payload) => self.ended = Some(panicked(payload.as_ref())),
        }
    }

    /// Ends the run with `outcome`: the stream is dropped first, then every handle resolves.
    fn finish(&mut self, outcome: Outcome<E>) -> Poll<()> {
        self.stream = None;
        self.call = None;
        self.finished = true;
        self.runs.remove(&self.run.member, self.run.fence);
        self.run.slot.set(outcome);
        self.live.exit();
        Poll::Ready(())
    }

    /// The lease is gone (or about to be): fire the signal, drop the stream, end as `Lost`.
    fn demote(&mut self) -> Poll<()> {
        self.stream = None;
        let panicked = fire(&self.run.abort, Some(lease_lost()));
        let done = self.finish(Outcome::Lost);
        discard(panicked);
        done
    }

    fn issue(&mut self, write: Write) {
        let store = Arc::clone(&self.store);
        let run = Arc::clone(&self.run);
        let seq = self.seq;
        let future: Pin<Box<dyn Future<Output = Reply> + Send>> = match &write {
            Write::Renew => Box::pin(async move {
                Reply::Written(store.renew(&run.member, &run.epoch, run.fence).await)
            }),
            Write::Progress(batch) => {
                let batch = Arc::clone(batch);
                Box::pin(async move {
                    Reply::Written(
                        store
                            .progress(&run.member, &run.epoch, run.fence, seq, &batch)
                            .await,
                    )
                })
            }
            Write::Finish { batch, outcome } => {
                let (batch, outcome) = (Arc::clone(batch), Arc::clone(outcome));
                Box::pin(async move {
                    Reply::Written(
                        store
                            .finish(&run.member, &run.epoch, run.fence, &outcome, seq, &batch)
                            .await,
                    )
                })
            }
            Write::Stop(reason) => {
                let outcome = encode_outcome(&Outcome::<E>::Stopped {
                    reason: reason.clone(),
                });
                Box::pin(async move {
                    Reply::Stopped(
                        store
                            .stop(&run.member, &run.epoch, Some(run.fence), &outcome)
                            .await,
                    )
                })
            }
        };
        self.call = Some(InFlight {
            write,
            sent: Instant::now(),
            future,
        });
    }

    /// Acts on the answer to `write`; `Some` when the run is over.
    fn on_reply(&mut self, write: Write, sent: Instant, reply: Reply) -> Option<Poll<()>> {
        match reply {
            Reply::Stopped(answer) => Some(match answer {
                Ok(Answer::Done(Stopped::Ok { .. })) => {
                    let Write::Stop(reason) = write else {
                        unreachable!("only a stop write answers `Stopped`")
                    };
                    self.finish(Outcome::Stopped { reason })
                }
                Ok(Answer::Done(Stopped::Idle { fence, outcome })) if fence == self.run.fence => {
                    let outcome = self.decode_outcome(&outcome);
                    self.finish(outcome)
                }
                Ok(Answer::Epoch(seen)) => {
                    (self.on_epoch)(seen);
                    self.finish(Outcome::Lost)
                }
                // Reaped and taken over, or the stop could not be written: the lease is no
                // longer renewed, so Redis ends it as `Lost` if it has not already.
                _ => self.finish(Outcome::Lost),
            }),
            Reply::Written(Ok(Answer::Done(Written::Ok { seq }))) => {
                if let Some(seq) = seq {
                    self.seq = seq;
                }
                self.deadline.reset(lease_deadline(sent, self.store.ttl));
                self.next_write.reset(sent + self.store.ttl / 3);
                if matches!(write, Write::Finish { .. }) {
                    let outcome = self.ended.take().unwrap_or(Outcome::Completed);
                    return Some(self.finish(outcome));
                }
                None
            }
            Reply::Written(Ok(Answer::Done(Written::Gone {
                idle_with_fence: true,
                outcome,
            }))) => {
                // Stopped from another replica (its message may still be on the way), or an
                // earlier attempt of this very finish got through: either way, what Redis holds.
                let outcome = self.decode_outcome(&outcome);
                self.stream = None;
                let panicked = if let Outcome::Stopped { reason } = &outcome {
                    fire(&self.run.abort, reason.clone())
                } else if !matches!(write, Write::Finish { .. }) {
                    fire(&self.run.abort, Some(lease_lost()))
                } else {
                    None
                };
                let done = self.finish(outcome);
                discard(panicked);
                Some(done)
            }
            Reply::Written(Ok(Answer::Done(Written::Lost | Written::Gone { .. }))) => {
                Some(self.demote())
            }
            Reply::Written(Ok(Answer::Epoch(seen))) => {
                (self.on_epoch)(seen);
                Some(self.demote())
            }
            Reply::Written(Err(error)) => {
                if matches!(error.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) {
                    // Unknown whether it got through: send the same write again (Redis
                    // recognises a batch it already applied). The deadline bounds the retries.
                    self.retry = Some(write);
                    self.next_write
                        .reset(Instant::now() + retry_backoff(self.store.ttl));
                    None
                } else {
                    Some(self.demote())
                }
            }
        }
    }

    fn decode_outcome(&self, text: &str) -> Outcome<E> {
        decode(
            "an outcome",
            &self.store.layout.hash(&self.run.member),
            text,
        )
        .unwrap_or(Outcome::Lost)
    }

    /// Takes the stream's ready items into the queue, within the poll budget (spent, it wakes
    /// the driver to go on after yielding).
    fn poll_stream(&mut self, cx: &mut Context<'_>, budget: &mut usize) {
        while self.queue.len() < MAX_QUEUED && self.ended.is_none() {
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            if *budget == 0 {
                cx.waker().wake_by_ref();
                return;
            }
            *budget -= 1;
            match panic::catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll_next(cx))) {
                Ok(Poll::Pending) => break,
                Ok(Poll::Ready(Some(item))) => match item.into_update() {
                    Ok(update) => self.take(update),
                    Err(error) => self.end_stream(Outcome::Failed {
                        error: Arc::new(error),
                    }),
                },
                Ok(Poll::Ready(None)) => self.end_stream(Outcome::Completed),
                Err(payload) => self.end_stream(panicked(payload.as_ref())),
            }
        }
    }

    /// Queues one item, encoded; a delta is also folded into the accumulated progress.
    fn take(&mut self, update: Update<P>) {
        let encoded = match &update {
            Update::Snapshot(item) | Update::Delta(item, _) => encode("progress", item),
        };
        let text = match encoded {
            Ok(text) => text,
            Err(error) => {
                return self.end_stream(Outcome::Panicked {
                    message: Some(
                        format!("keyrunner-redis: progress could not be encoded: {error}").into(),
                    ),
                });
            }
        };
        match update {
            Update::Snapshot(_) => self.last_snapshot.clone_from(&text),
            Update::Delta(delta, fold) => {
                self.deltas = true;
                match &mut self.accumulated {
                    Some(accumulated) => fold(accumulated, &delta),
                    None => self.accumulated = Some(delta),
                }
            }
        }
        self.queue.push(text);
    }

    /// The queued items as one batch, with what the key's progress becomes.
    fn batch(&mut self) -> Result<Batch, Error> {
        let stored = if self.deltas {
            encode("progress", &self.accumulated)?
        } else {
            self.last_snapshot.clone()
        };
        Ok(Batch {
            deltas: self.deltas,
            items: std::mem::take(&mut self.queue),
            stored,
        })
    }

    fn end_stream(&mut self, outcome: Outcome<E>) {
        self.stream = None;
        self.ended = Some(outcome);
    }
}

impl<K, P, E, F, St, M> Future for Owner<K, P, E, F, St, M>
where
    K: Send + 'static,
    P: Serialize + Send + 'static,
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: FnOnce(TaskContext<K>) -> St + Send + 'static,
    St: Stream + Send + 'static,
    St::Item: IntoProgress<P, E, M>,
    M: 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(());
        }
        if let Some((task, key)) = this.start.take() {
            this.begin(task, key);
        }
        let mut budget = POLL_BUDGET;
        loop {
            // Asked to stop from outside: drop the stream at once.
            if !this.stopping
                && (this.run.abort.is_aborted() || Pin::new(&mut this.aborted).poll(cx).is_ready())
            {
                this.stream = None;
                match this.run.take_ending() {
                    Some(Ending::Recorded(outcome)) => return this.finish(outcome),
                    Some(Ending::Requested(reason)) => {
                        this.stopping = true;
                        this.retry = None;
                        this.issue(Write::Stop(reason));
                    }
                    Some(Ending::DataLoss) | None => return this.finish(Outcome::Lost),
                }
            }
            // Past the local deadline: the lease may be given away soon.
            if this.deadline.poll_elapsed(cx).is_ready() {
                return this.demote();
            }
            if let Some(call) = &mut this.call
                && let Poll::Ready(reply) = call.future.as_mut().poll(cx)
            {
                let Some(InFlight { write, sent, .. }) = this.call.take() else {
                    unreachable!("the call was just polled")
                };
                if let Some(done) = this.on_reply(write, sent, reply) {
                    return done;
                }
                continue;
            }
            if this.stopping {
                return Poll::Pending;
            }
            this.poll_stream(cx, &mut budget);
            if this.call.is_none() {
                let write = if let Some(write) = this.retry.take() {
                    if this.next_write.poll_elapsed(cx).is_pending() {
                        this.retry = Some(write);
                        return Poll::Pending;
                    }
                    Some(write)
                } else if this.ended.is_some() || !this.queue.is_empty() {
                    match this.batch() {
                        Ok(batch) => match &this.ended {
                            Some(outcome) => Some(Write::Finish {
                                batch: Arc::new(batch),
                                outcome: encode_outcome(outcome).into(),
                            }),
                            None => Some(Write::Progress(Arc::new(batch))),
                        },
                        Err(error) => {
                            // The accumulated progress has no wire form: the run ends saying so.
                            this.queue.clear();
                            this.deltas = false;
                            this.accumulated = None;
                            this.end_stream(Outcome::Panicked {
                                message: Some(
                                    format!(
                                        "keyrunner-redis: progress could not be encoded: {error}"
                                    )
                                    .into(),
                                ),
                            });
                            continue;
                        }
                    }
                } else if this.next_write.poll_elapsed(cx).is_ready() {
                    Some(Write::Renew)
                } else {
                    None
                };
                if let Some(write) = write {
                    this.issue(write);
                    continue;
                }
            }
            // Nothing to do until a timer, the write, the stream or the signal wakes us (or, when
            // the poll budget ran out, at once: `poll_stream` woke us).
            return Poll::Pending;
        }
    }
}

impl<K, P, E, F, St, M> Drop for Owner<K, P, E, F, St, M> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The executor dropped the run before it ended: never polled means the spawner refused
        // it. Release the key (idle with `Lost`) in the background and resolve the handles.
        self.run
            .refused
            .store(self.start.is_some(), Ordering::SeqCst);
        self.stream = None;
        self.call = None;
        self.runs.remove(&self.run.member, self.run.fence);
        let store = Arc::clone(&self.store);
        let (member, epoch, fence) = (
            self.run.member.clone(),
            Arc::clone(&self.run.epoch),
            self.run.fence,
        );
        self.store.rt.spawn(Box::pin(async move {
            let _ = store.stop(&member, &epoch, Some(fence), store.lost()).await;
        }));
        self.run.slot.set(Outcome::Lost);
        self.live.exit();
    }
}

/// The local deadline of a lease whose renewal was sent at `sent`: a tenth of the TTL before
/// Redis's own deadline could possibly fall (it runs from when Redis received the write).
pub(crate) fn lease_deadline(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - ttl / 10
}

fn retry_backoff(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(5), Duration::from_millis(200))
}

/// The codec text of `outcome`; an error that cannot be encoded is recorded as a panic that says
/// so.
pub(crate) fn encode_outcome<E: Serialize>(outcome: &Outcome<E>) -> String {
    encode("an outcome", outcome).unwrap_or_else(|error| {
        let fallback: Outcome<E> = Outcome::Panicked {
            message: Some(
                format!("keyrunner-redis: the outcome could not be encoded: {error}").into(),
            ),
        };
        encode("an outcome", &fallback).unwrap_or_else(|_| "\"Lost\"".to_owned())
    })
}

fn panicked<E>(payload: &(dyn Any + Send)) -> Outcome<E> {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| Arc::from(*text))
        .or_else(|| {
            payload
                .downcast_ref::<String>()
                .map(|text| Arc::from(text.as_str()))
        });
    Outcome::Panicked { message }
}
