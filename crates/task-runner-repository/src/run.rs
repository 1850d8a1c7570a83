//! One run: its shared record ([`RunCore`]), the future that drives its stream ([`Driver`]) and
//! the handle that awaits its outcome ([`RunHandle`]).

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use event_listener::EventListener;
use futures_core::Stream;
use keyrunner_pub_sub::Topic;
use pin_project_lite::pin_project;
use slab::Slab;

use crate::abort::{AbortCallback, AbortController, AbortSignal};
use crate::notify::Notify;
use crate::panics::{Deferred, Payload, discard};
use crate::state::{Outcome, Reason, RunId, State};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use crate::task::{IntoProgress, TaskContext};

/// Items a driver takes from an always-ready stream before it yields to its executor.
const YIELD_BUDGET: u32 = 64;

/// What a key's subject holds: the public state plus, while running, the run itself.
pub(crate) struct Slot<S, E> {
    pub(crate) state: State<S, E>,
    pub(crate) run: Option<Arc<dyn ErasedRun<E>>>,
}

impl<S, E> Slot<S, E> {
    pub(crate) fn idle(last: Option<Outcome<E>>) -> Self {
        Self {
            state: State::Idle { last },
            run: None,
        }
    }

    pub(crate) fn running_id(&self) -> Option<RunId> {
        self.state.run_id()
    }
}

/// The placeholder a reused allocation holds between two states: idle, no run.
impl<S, E> Default for Slot<S, E> {
    fn default() -> Self {
        Self::idle(None)
    }
}

impl<S: Clone, E> Clone for Slot<S, E> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            run: self.run.clone(),
        }
    }
}

/// The part of a run every party shares, whatever the repository's key and hasher types.
pub(crate) struct RunCore<E> {
    /// Taken inside the compare-and-set that starts the run, under the key's lock, so the runs
    /// of one key get increasing ids in the order they start. Read only after that.
    id: AtomicU64,
    pub(crate) abort: AbortController,
    /// The outcome and the handles waiting for it.
    completion: Mutex<Completion<E>>,
    /// Set once the stream has been dropped, before the waiting handles are taken (under
    /// `completion`'s lock) to be woken; what handles wait for.
    finished: AtomicBool,
    /// Set when the executor dropped the driver without polling it.
    refused: AtomicBool,
    /// The driver's waker, woken by a stop. (Not the signal's event: that one allocates a
    /// listener per waiter, and every run has a driver waiting.)
    driver: Mutex<Option<Waker>>,
}

/// How a run ended, and who waits to hear it.
struct Completion<E> {
    /// Written once, by whoever wins the transition that ends the run, inside that transition.
    outcome: Option<Outcome<E>>,
    waiters: Waiters,
}

/// The wakers of the handles awaiting a run, one slot per handle, re-armed in place: awaiting
/// allocates nothing for the first handle, and a slab slot for each further one (the slab
/// boxed, as most runs have one handle or none).
#[derive(Default)]
struct Waiters {
    first: Option<Waker>,
    more: Option<Box<Slab<Waker>>>,
}

/// Which [`Waiters`] slot a handle holds.
#[derive(Clone, Copy, Debug)]
enum WaitSlot {
    First,
    More(usize),
}

impl Waiters {
    /// Stores `waker` in the handle's slot, taking a free one if it has none.
    fn register(&mut self, slot: &mut Option<WaitSlot>, waker: &Waker) {
        let known = match *slot {
            Some(WaitSlot::First) => self.first.as_mut(),
            Some(WaitSlot::More(index)) => self.more.as_mut().and_then(|more| more.get_mut(index)),
            None => None,
        };
        if let Some(known) = known {
            if !known.will_wake(waker) {
                known.clone_from(waker);
            }
        } else if self.first.is_none() {
            self.first = Some(waker.clone());
            *slot = Some(WaitSlot::First);
        } else {
            let more = self.more.get_or_insert_default();
            *slot = Some(WaitSlot::More(more.insert(waker.clone())));
        }
    }

    fn remove(&mut self, slot: WaitSlot) -> Option<Waker> {
        match slot {
            WaitSlot::First => self.first.take(),
            WaitSlot::More(index) => self.more.as_mut()?.try_remove(index),
        }
    }

    fn wake_all(self) {
        let more = self.more.into_iter().flat_map(|more| more.into_iter());
        for waker in self.first.into_iter().chain(more.map(|(_, waker)| waker)) {
            waker.wake();
        }
    }
}

impl<E> RunCore<E> {
    fn new() -> Self {
        Self {
            id: AtomicU64::new(0),
            abort: AbortController::new(),
            completion: Mutex::new(Completion {
                outcome: None,
                waiters: Waiters::default(),
            }),
            finished: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            driver: Mutex::new(None),
        }
    }

    pub(crate) fn id(&self) -> RunId {
        RunId(self.id.load(Ordering::Relaxed))
    }

    /// Names the run; called once, inside the transition that starts it.
    pub(crate) fn set_id(&self, id: RunId) {
        self.id.store(id.0, Ordering::Relaxed);
    }

    pub(crate) fn set_outcome(&self, outcome: Outcome<E>) {
        lock(&self.completion).outcome = Some(outcome);
    }

    /// Fires the run's signal and wakes its driver, which then drops the stream.
    pub(crate) fn abort(&self, reason: Option<Reason>) {
        // Wake even if a callback of the signal panics: the stream must still be dropped.
        let _wake = WakeOnDrop(self);
        self.abort.abort(reason);
    }

    /// Registers the driver's waker; returns whether the run was aborted meanwhile.
    fn register_driver(&self, waker: &Waker) -> bool {
        let mut slot = lock(&self.driver);
        if !slot.as_ref().is_some_and(|known| known.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
        drop(slot);
        // `abort` sets the flag before it takes the waker, under the same lock: either it
        // finds the waker stored above, or this load sees the flag.
        self.abort.is_aborted()
    }

    /// Whether the run's recorded outcome is `Stopped`.
    fn was_stopped(&self) -> bool {
        lock(&self.completion)
            .outcome
            .as_ref()
            .is_some_and(Outcome::is_stopped)
    }

    pub(crate) fn was_refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        let waiters = mem::take(&mut lock(&self.completion).waiters);
        // Woken outside the lock: a waker may run anything, this run's handles included.
        waiters.wake_all();
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

struct WakeOnDrop<'a, E>(&'a RunCore<E>);

impl<E> Drop for WakeOnDrop<'_, E> {
    fn drop(&mut self) {
        let waker = lock(&self.0.driver).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A run with its key's types erased, so handles are `RunHandle<E>` only.
pub(crate) trait ErasedRun<E>: Send + Sync {
    fn core(&self) -> &RunCore<E>;

    /// The stop transition: if this run still owns its key, records `Stopped { reason }` and
    /// idles the key, through the run's own lease (no lookup). Returns whether it did.
    fn stop_transition(&self, reason: Option<Reason>) -> bool;
}

/// A run: its core plus a lease on its key, so the key (and so the run's outcome) stays
/// remembered while the driver or any handle lives.
pub(crate) struct Run<K, S, E, H> {
    /// Shared apart from the lease, so the driver can let go of the key before it reports.
    pub(crate) core: Arc<RunCore<E>>,
    pub(crate) topic: Topic<K, Slot<S, E>, H>,
}

impl<K, S, E, H> ErasedRun<E> for Run<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    fn core(&self) -> &RunCore<E> {
        &self.core
    }

    fn stop_transition(&self, reason: Option<Reason>) -> bool {
        self.conclude(&Outcome::Stopped { reason })
    }
}

impl<K, S, E, H> Run<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(topic: Topic<K, Slot<S, E>, H>) -> Self {
        Self {
            core: Arc::new(RunCore::new()),
            topic,
        }
    }

    /// Publishes `progress` if this run still owns the key.
    ///
    /// A discarded item is dropped here, after the key's lock is released: its destructor is
    /// user code and may call back into the repository.
    fn publish(&self, progress: S) -> bool {
        let id = self.core.id();
        let mut progress = Some(progress);
        let published = self.topic.update(|slot| {
            let slot = slot?;
            if slot.running_id() != Some(id) {
                return None;
            }
            Some(Slot {
                state: State::Running {
                    run: id,
                    progress: progress.take(),
                },
                run: slot.run.clone(),
            })
        });
        drop(progress);
        published
    }

    /// Ends the run with `outcome` if it still owns the key; the outcome is recorded inside the
    /// same transition, so handle, state and listeners agree. A discarded outcome is dropped by
    /// the caller, after the key's lock is released.
    pub(crate) fn conclude(&self, outcome: &Outcome<E>) -> bool {
        let id = self.core.id();
        self.topic.update(|slot| {
            let slot = slot?;
            if slot.running_id() != Some(id) {
                return None;
            }
            self.core.set_outcome(outcome.clone());
            Some(Slot::idle(Some(outcome.clone())))
        })
    }
}

/// Counts the drivers alive, so shutdown can wait for every stream to be dropped.
#[derive(Debug, Default)]
pub(crate) struct LiveTasks {
    count: AtomicUsize,
    quiet: Notify,
}

impl LiveTasks {
    pub(crate) fn get(&self) -> usize {
        // `SeqCst`: a shutdown's re-check after listening (see `Notify`).
        self.count.load(Ordering::SeqCst)
    }

    /// Counts one more live task until the returned token is dropped, so a start that unwinds
    /// before its driver exists leaves no count behind.
    pub(crate) fn enter(self: &Arc<Self>) -> Live {
        self.count.fetch_add(1, Ordering::AcqRel);
        Live(Arc::clone(self))
    }

    fn exit(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.quiet.notify_all();
        }
    }

    pub(crate) fn listen(&self) -> EventListener {
        self.quiet.listen()
    }
}

/// One live task, counted in [`LiveTasks`] until dropped.
pub(crate) struct Live(Arc<LiveTasks>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.exit();
    }
}

pin_project! {
    /// The future a spawner runs for one run: polls the task's stream, publishes its items,
    /// records how it ended, and drops the stream as soon as the run is stopped.
    pub(crate) struct Driver<K, S, E, H, F, St, M>
    where
        K: Eq,
        K: Hash,
        K: Clone,
        K: Send,
        K: Sync,
        K: 'static,
        S: Send,
        S: Sync,
        S: 'static,
        E: Send,
        E: Sync,
        E: 'static,
        H: BuildHasher,
        H: Send,
        H: Sync,
        H: 'static,
    {
        #[pin]
        stream: Option<St>,
        task: Option<F>,
        run: Option<Arc<Run<K, S, E, H>>>,
        live: Option<Live>,
        link: Option<AbortCallback>,
        // A listener's panic during one of this run's transitions, resumed once the run is done.
        panic: Deferred,
        started: bool,
        concluded: bool,
        marker: PhantomData<fn() -> M>,
    }

    impl<K, S, E, H, F, St, M> PinnedDrop for Driver<K, S, E, H, F, St, M>
    where
        K: Eq,
        K: Hash,
        K: Clone,
        K: Send,
        K: Sync,
        K: 'static,
        S: Send,
        S: Sync,
        S: 'static,
        E: Send,
        E: Sync,
        E: 'static,
        H: BuildHasher,
        H: Send,
        H: Sync,
        H: 'static,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(run) = this.run.take() else {
                return;
            };
            if !*this.concluded {
                // The executor dropped the run before it ended.
                if !*this.started {
                    run.core.refused.store(true, Ordering::Release);
                }
                // Stale-safe: does nothing if the run no longer owns the key.
                this.panic.catch(|| run.conclude(&Outcome::Lost));
            }
            finish(this.stream, this.task, run, this.link, this.live);
            this.panic.resume();
        }
    }
}

/// Drops the stream (on the executor, where it was polled), lets go of the key, tells the
/// handles, then leaves the live count.
fn finish<K, S, E, H, F, St>(
    mut stream: Pin<&mut Option<St>>,
    task: &mut Option<F>,
    run: Arc<Run<K, S, E, H>>,
    link: &mut Option<AbortCallback>,
    live: &mut Option<Live>,
) {
    // A panicking destructor must not keep the handles waiting forever.
    let _ = panic::catch_unwind(AssertUnwindSafe(|| drop(task.take())));
    let _ = panic::catch_unwind(AssertUnwindSafe(|| stream.set(None)));
    drop(link.take());
    // A run that was not stopped can never be: its signal's callbacks (and whatever they hold,
    // maybe this run's own handle) go now. A stopped run's signal is fired by its stopper, who
    // may not have done so yet: its callbacks must stay for that.
    if !run.core.was_stopped() {
        run.core.abort.close();
    }
    // The driver's lease first, then the handles, then the live count: once a handle resolves
    // the driver holds no key, and once a shutdown resolves every handle has resolved too.
    let core = Arc::clone(&run.core);
    drop(run);
    core.finish();
    drop(live.take());
}

impl<K, S, E, H, F, St, M> Driver<K, S, E, H, F, St, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(
        run: Arc<Run<K, S, E, H>>,
        task: F,
        live: Live,
        link: Option<AbortCallback>,
    ) -> Self {
        Self {
            stream: None,
            task: Some(task),
            run: Some(run),
            live: Some(live),
            link,
            panic: Deferred::default(),
            started: false,
            concluded: false,
            marker: PhantomData,
        }
    }
}

impl<K, S, E, H, F, St, M> Future for Driver<K, S, E, H, F, St, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher + Send + Sync + 'static,
    F: FnOnce(TaskContext<K>) -> St,
    St: Stream,
    St::Item: IntoProgress<S, E, M>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        *this.started = true;
        let Some(run) = this.run.as_ref() else {
            return Poll::Ready(());
        };
        let mut budget = YIELD_BUDGET;
        // The waker is registered once per poll; within the poll a stop is seen by the flag.
        let mut aborted = run.core.register_driver(cx.waker());
        let outcome = loop {
            // A stopper records the outcome before it fires the signal: nothing to record here.
            if aborted {
                break None;
            }
            if let Some(task) = this.task.take() {
                let context = TaskContext::new(run.topic.key().clone(), run.core.abort.signal());
                match panic::catch_unwind(AssertUnwindSafe(|| task(context))) {
                    Ok(stream) => this.stream.set(Some(stream)),
                    Err(payload) => break Some(panicked(payload)),
                }
            }
            let Some(stream) = this.stream.as_mut().as_pin_mut() else {
                // Unreachable: the stream is set right above and only cleared in `finish`.
                break Some(Outcome::Lost);
            };
            match panic::catch_unwind(AssertUnwindSafe(|| stream.poll_next(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Some(item))) => match item.into_progress() {
                    Ok(progress) => {
                        // A listener's panic means the item was published: keep driving.
                        let published = this.panic.catch(|| run.publish(progress));
                        if !published.unwrap_or(true) {
                            // Stopped or superseded: the item is discarded.
                            break None;
                        }
                        budget -= 1;
                        if budget == 0 {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        aborted = run.core.abort.is_aborted();
                    }
                    Err(error) => break Some(Outcome::Failed(Arc::new(error))),
                },
                Ok(Poll::Ready(None)) => break Some(Outcome::Completed),
                Err(payload) => break Some(panicked(payload)),
            }
        };
        if let Some(outcome) = outcome {
            // Stale-safe: a stop that won the race has recorded its own outcome.
            this.panic.catch(|| run.conclude(&outcome));
            // Dropped here, not inside the transition: a discarded error's destructor is user code.
            drop(outcome);
        }
        *this.concluded = true;
        if let Some(run) = this.run.take() {
            finish(this.stream, this.task, run, this.link, this.live);
        }
        // The run is over and its stream dropped: a listener's panic surfaces here, to the
        // executor, without having cut the run short.
        this.panic.resume();
        Poll::Ready(())
    }
}

fn panicked<E>(payload: Payload) -> Outcome<E> {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| Arc::from(*text))
        .or_else(|| {
            payload
                .downcast_ref::<String>()
                .map(|text| Arc::from(text.as_str()))
        });
    discard(payload);
    Outcome::Panicked { message }
}

/// Awaits the outcome of one run; resolves once the run's stream has been dropped.
///
/// Cloning gives another handle to the same run, so several parties can await it. Holding a
/// handle keeps the key's last outcome remembered (see the crate docs, "Memory").
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use keyrunner_task_runner_repository::{BoxFuture, Outcome, TaskRunnerRepository};
///
/// let repository: TaskRunnerRepository<&str, u32> =
///     TaskRunnerRepository::new(|future: BoxFuture| {
///         std::thread::spawn(move || futures::executor::block_on(future));
///     });
/// let handle = repository.run("job", |_| stream::iter([1, 2, 3])).unwrap();
/// let other = handle.clone();
/// assert_eq!(handle.await, Outcome::Completed);
/// assert_eq!(other.await, Outcome::Completed);
/// # });
/// ```
#[must_use = "dropping a RunHandle detaches it: the run goes on"]
pub struct RunHandle<E> {
    run: Arc<dyn ErasedRun<E>>,
    /// The slot this handle's waker is kept in while it waits.
    waiting: Option<WaitSlot>,
}

impl<E> RunHandle<E> {
    pub(crate) fn new(run: Arc<dyn ErasedRun<E>>) -> Self {
        Self { run, waiting: None }
    }

    /// The run this handle awaits.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run.core().id()
    }

    /// The run's abort signal (fired when the run is asked to stop).
    #[must_use]
    pub fn abort_signal(&self) -> AbortSignal {
        self.run.core().abort.signal()
    }

    /// Whether the run has ended and its stream has been dropped.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.run.core().is_finished()
    }

    /// The run's outcome, once it is finished.
    #[must_use]
    pub fn outcome(&self) -> Option<Outcome<E>> {
        if !self.is_finished() {
            return None;
        }
        // Every path that finishes a run records an outcome first; `Lost` is a safe default
        // should a driver ever be torn down in a way that skipped it.
        Some(
            lock(&self.run.core().completion)
                .outcome
                .clone()
                .unwrap_or(Outcome::Lost),
        )
    }

    /// Lets the run go on without this handle (the same as dropping it).
    pub fn detach(self) {}
}

impl<E> Clone for RunHandle<E> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.run))
    }
}

impl<E> Future for RunHandle<E> {
    type Output = Outcome<E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<E>> {
        let this = &mut *self;
        let core = this.run.core();
        if !core.is_finished() {
            let mut completion = lock(&core.completion);
            // Looked at again under the lock: `finish` sets the flag before it takes the
            // waiters under this lock, so either it takes this waker or this sees the flag.
            if !core.is_finished() {
                completion.waiters.register(&mut this.waiting, cx.waker());
                return Poll::Pending;
            }
        }
        // `finish` took the waiters: the slot is gone.
        this.waiting = None;
        Poll::Ready(this.outcome().unwrap_or(Outcome::Lost))
    }
}

impl<E> Drop for RunHandle<E> {
    fn drop(&mut self) {
        let Some(slot) = self.waiting.take() else {
            return;
        };
        let core = self.run.core();
        let mut completion = lock(&core.completion);
        // After `finish` the slots were taken, and a freed one may belong to another handle.
        let waker = if core.is_finished() {
            None
        } else {
            completion.waiters.remove(slot)
        };
        drop(completion);
        drop(waker);
    }
}

impl<E> Unpin for RunHandle<E> {}

impl<E> fmt::Debug for RunHandle<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle")
            .field("run", &self.run_id())
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
