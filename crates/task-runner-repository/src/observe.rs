//! Watching keys: listeners ([`Subscription`]) and [`EventStream`]s.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;

use crate::abort::{AbortCallback, AbortSignal};
use crate::bounds::Value;
use crate::event::{Event, Position};
use crate::log::Next;
use crate::run::{RunCore, Slot};
use crate::state::NoError;
use crate::sync::{AtomicBool, Mutex, Ordering, lock};
use crate::wait::{WaitList, WaitSlot};

/// A listener as the key's subject calls it.
pub(crate) type SlotListener<P, E> = Box<dyn Fn(&Slot<P, E>) + Send + Sync>;

/// A key a stream watches: its listener stays registered, and its last slot can be read.
pub(crate) trait Watched<P, E>: Send + Sync {
    fn last(&self) -> Option<Arc<Slot<P, E>>>;
}

/// Wraps a user's listener: the subject hands it slots, the user gets events. With
/// `immediate`, the first call (the subject's replay of the current slot) becomes a `State`
/// event with the accumulated progress, and the deltas it already contains are skipped.
pub(crate) fn listener<P, E, F>(listener: F, immediate: bool) -> SlotListener<P, E>
where
    P: Value,
    E: Value,
    F: Fn(&Event<P, E>) + Send + Sync + 'static,
{
    if !immediate {
        // No replay to turn into a resync: the listener gets each slot's event as it is.
        return Box::new(move |slot: &Slot<P, E>| listener(&slot.event));
    }
    // The subject calls one listener from one thread at a time, and hands over between threads
    // under its lock: these need no ordering of their own.
    let replay = AtomicBool::new(true);
    let skipping = AtomicBool::new(false);
    let skip_through = Mutex::new(Position::NEVER);
    Box::new(move |slot: &Slot<P, E>| {
        if replay.swap(false, Ordering::Relaxed) {
            if slot.is_progress() {
                let event = slot.resync();
                *lock(&skip_through) = event.position();
                skipping.store(true, Ordering::Relaxed);
                listener(&event);
            } else {
                listener(&slot.event);
            }
            return;
        }
        if skipping.load(Ordering::Relaxed) {
            let through = *lock(&skip_through);
            if slot.event.position() <= through {
                return;
            }
            skipping.store(false, Ordering::Relaxed);
        }
        listener(&slot.event);
    })
}

/// Guard of a listener on one key: dropping it (or [`unsubscribe`](Self::unsubscribe))
/// removes the listener.
///
/// While it lives, the key stays remembered (with its last outcome and final progress), even
/// when idle.
#[must_use = "dropping a Subscription unsubscribes the listener"]
pub struct Subscription {
    // The lower layer's subscription, its key and hasher types erased.
    inner: Box<dyn Send + Sync>,
}

impl Subscription {
    pub(crate) fn new(inner: Box<dyn Send + Sync>) -> Self {
        Self { inner }
    }

    /// Removes the listener (the same as dropping the guard). Once this returns, the listener
    /// is not called again — unless this runs inside a listener (of any key) while the
    /// listener removed is being called on another thread: then it returns at once, without
    /// waiting for that call, so that two keys' listeners removing each other cannot deadlock.
    pub fn unsubscribe(self) {
        drop(self.inner);
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// How many entries a stream's queue holds before it drops the oldest. An entry is a run's
/// start or end, or all the progress of one run so far, so this is about twenty runs' worth of
/// history waiting for a consumer that does not poll.
const QUEUE_CAPACITY: usize = 64;

/// What a stream's listener leaves for the stream to read.
enum Entry<P, E> {
    /// A run's start (with the run, to check a resumed position against) or end, or an idle
    /// state.
    Event(Event<P, E>, Option<Arc<RunCore<P, E>>>),
    /// A run's progress, up to item `through`: read from the run's log with the stream's own
    /// cursor.
    Progress {
        core: Arc<RunCore<P, E>>,
        through: u64,
    },
}

struct Queue<P, E> {
    entries: VecDeque<Entry<P, E>>,
    waiters: WaitList,
}

/// A stream of one key's [`Event`]s: its current state first, then every event, in order.
///
/// Each stream reads a run's progress with a cursor of its own:
///
/// - **Deltas.** A slow consumer gets every delta, in order, however far behind it falls —
///   up to the repository's bound on a run's retained deltas
///   ([`Builder::max_deltas`](crate::Builder::max_deltas)). A consumer further behind gets one
///   `State` event carrying the accumulated progress (a resync), then the deltas after it.
///   What a consumer receives grows linearly with the progress, never quadratically.
/// - **Snapshots.** A slow consumer gets the newest snapshot (intermediate ones are skipped).
/// - **Runs.** Every run's start and end, in order; if a consumer lets more than about twenty
///   whole runs pile up, the oldest are dropped.
///
/// A slow consumer never makes the repository or the task wait.
///
/// The stream keeps the key remembered. It ends after the repository shuts down (explicitly,
/// or when its last handle is dropped), once it has yielded the key's final state; a stream
/// opened during or after the shutdown yields the key's state and ends.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::{StreamExt, stream};
/// use keyrunner_task_runner_repository::{Delta, Outcome, State, TaskRunnerRepository, spawn_fn};
///
/// let replies: TaskRunnerRepository<&str, String> = TaskRunnerRepository::new(spawn_fn(|driver| {
///     std::thread::spawn(move || futures::executor::block_on(driver));
/// }));
/// let mut events = replies.stream("chat");
/// assert_eq!(events.next().await.unwrap().state(), Some(&State::default()));
///
/// let handle = replies
///     .run("chat", |_| stream::iter(["Hel", "lo"].map(|token| Delta(token.to_owned()))))
///     .unwrap();
/// handle.await;
/// assert!(events.next().await.unwrap().state().unwrap().is_running());
/// assert_eq!(events.next().await.unwrap().delta().unwrap(), "Hel");
/// assert_eq!(events.next().await.unwrap().delta().unwrap(), "lo");
/// let end = events.next().await.unwrap();
/// assert_eq!(end.state().unwrap().last_outcome(), Some(&Outcome::Completed));
/// assert_eq!(end.state().unwrap().progress().unwrap(), "Hello");
///
/// replies.shutdown(None).await;
/// assert_eq!(events.next().await, None, "streams end after a shutdown");
/// # });
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct EventStream<P, E = NoError> {
    queue: Arc<Mutex<Queue<P, E>>>,
    waiting: Option<WaitSlot>,
    // Keeps the listener (and so the key) alive; also reads the key's final state.
    key: Box<dyn Watched<P, E>>,
    shutdown: AbortSignal,
    // Wakes the stream when the repository shuts down.
    _on_shutdown: AbortCallback,
    /// The last position yielded.
    cursor: Option<Position>,
    /// The position the consumer has seen already (a resumed stream), checked against the
    /// first entry.
    resume: Option<Position>,
    done: bool,
}

/// What the stream found at the front of its queue.
enum Front<P, E> {
    Event(Event<P, E>, Option<Arc<RunCore<P, E>>>),
    Progress(Arc<RunCore<P, E>>, u64),
    Empty,
}

impl<P: Value, E: Value> EventStream<P, E> {
    /// A stream of the events `watch` registers a listener for; `watch` gets the listener and
    /// must register it with `immediate`.
    pub(crate) fn new(
        watch: impl FnOnce(SlotListener<P, E>) -> Box<dyn Watched<P, E>>,
        shutdown: AbortSignal,
        resume: Option<Position>,
    ) -> Self {
        let queue = Arc::new(Mutex::new(Queue {
            entries: VecDeque::new(),
            waiters: WaitList::default(),
        }));
        let sink = Arc::clone(&queue);
        let key = watch(Box::new(move |slot: &Slot<P, E>| push(&sink, slot)));
        let woken = Arc::clone(&queue);
        let on_shutdown = shutdown.on_abort(move |_| {
            let waiters = lock(&woken).waiters.take();
            waiters.wake_all();
        });
        Self {
            queue,
            waiting: None,
            key,
            shutdown,
            _on_shutdown: on_shutdown,
            cursor: None,
            resume,
            done: false,
        }
    }
}

/// The stream's listener: queues the slot's event (or the run's progress, to be read from its
/// log), then wakes the stream. Runs with no lock held; clones only `Arc`s under its own.
fn push<P, E>(queue: &Mutex<Queue<P, E>>, slot: &Slot<P, E>) {
    let entry = match &slot.run {
        Some(run) if slot.is_progress() => Entry::Progress {
            core: Arc::clone(run.core()),
            through: slot.event.position().seq(),
        },
        _ => Entry::Event(
            slot.event.clone(),
            slot.run.as_ref().map(|run| Arc::clone(run.core())),
        ),
    };
    let mut unused = None;
    let (waiters, evicted) = {
        let mut queue = lock(queue);
        match (queue.entries.back_mut(), entry) {
            (
                Some(Entry::Progress { core, through }),
                Entry::Progress {
                    core: newer,
                    through: now,
                },
            ) if Arc::ptr_eq(core, &newer) => {
                *through = now;
                unused = Some(newer);
            }
            (_, entry) => queue.entries.push_back(entry),
        }
        let evicted = if queue.entries.len() > QUEUE_CAPACITY {
            queue.entries.pop_front()
        } else {
            None
        };
        (queue.waiters.take(), evicted)
    };
    // Dropped outside the lock: they may hold the last reference to user values.
    drop((unused, evicted));
    waiters.wake_all();
}

impl<P, E> EventStream<P, E> {
    /// Takes the front entry: an event is popped, a run's progress is looked at (it stays until
    /// the cursor has read it through), and an empty queue registers the waker.
    fn front(&mut self, cx: &mut Context<'_>) -> Front<P, E> {
        let mut queue = lock(&self.queue);
        match queue.entries.front() {
            Some(Entry::Progress { core, through }) => Front::Progress(Arc::clone(core), *through),
            Some(Entry::Event(..)) => match queue.entries.pop_front() {
                Some(Entry::Event(event, core)) => Front::Event(event, core),
                // Unreachable: the front was just seen to be an event.
                _ => Front::Empty,
            },
            None => {
                let replaced = queue.waiters.register(&mut self.waiting, cx.waker());
                drop(queue);
                drop(replaced);
                Front::Empty
            }
        }
    }

    /// Pops the front entry if it is `core`'s progress and the cursor has read it through
    /// `seen`.
    fn pop_progress(&self, core: &Arc<RunCore<P, E>>, seen: u64) {
        let popped = {
            let mut queue = lock(&self.queue);
            match queue.entries.front() {
                Some(Entry::Progress {
                    core: front,
                    through,
                }) if Arc::ptr_eq(front, core) && *through <= seen => queue.entries.pop_front(),
                _ => None,
            }
        };
        drop(popped);
    }

    /// Whether the stream has yielded its key's final state (after a shutdown).
    fn has_final_state(&self) -> bool {
        let last = self
            .key
            .last()
            .map_or(Position::NEVER, |slot| slot.event.position());
        self.cursor.is_some_and(|cursor| cursor >= last)
    }
}

impl<P, E> Stream for EventStream<P, E> {
    type Item = Event<P, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<P, E>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.front(cx) {
                Front::Event(event, core) => {
                    let position = event.position();
                    if let Some(resume) = this.resume.take() {
                        // The consumer has this very state already, or this is the start of a
                        // run whose items up to `resume` it has (deliveries still on their way
                        // here from another thread): the cursor takes over from `resume`.
                        let within = core.is_some_and(|core| {
                            resume.run_id() == Some(core.id())
                                && resume > position
                                && resume.seq() <= core.seq()
                        });
                        if resume == position || within {
                            this.cursor = Some(resume);
                            continue;
                        }
                    }
                    if this.cursor.is_some_and(|cursor| position <= cursor) {
                        continue;
                    }
                    this.cursor = Some(position);
                    return Poll::Ready(Some(event));
                }
                Front::Progress(core, through) => {
                    let run = core.id();
                    if let Some(resume) = this.resume.take() {
                        // Resume within this run only if the consumer's position is one it
                        // could have seen.
                        if resume.run_id() == Some(run) && resume.seq() <= core.seq() {
                            this.cursor = Some(resume);
                        }
                    }
                    let seen = this
                        .cursor
                        .filter(|cursor| cursor.run_id() == Some(run))
                        .map(Position::seq);
                    let next = match seen {
                        Some(seen) => core.next_after(seen),
                        None => Next::Resync,
                    };
                    let event = match next {
                        Next::UpToDate => {
                            this.pop_progress(&core, seen.unwrap_or(through));
                            continue;
                        }
                        Next::Delta(seq, delta) => Event::Delta {
                            position: Position::at(run, seq),
                            delta,
                        },
                        Next::Resync => core.resync(),
                    };
                    let position = event.position();
                    this.cursor = Some(position);
                    this.pop_progress(&core, position.seq());
                    return Poll::Ready(Some(event));
                }
                Front::Empty => {
                    if this.shutdown.is_aborted() && this.has_final_state() {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<P, E> FusedStream for EventStream<P, E> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<P, E> Drop for EventStream<P, E> {
    fn drop(&mut self) {
        if let Some(slot) = self.waiting.take() {
            let removed = lock(&self.queue).waiters.remove(slot);
            drop(removed);
        }
    }
}

impl<P, E> fmt::Debug for EventStream<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("EventStream");
        match self.queue.try_lock() {
            Ok(queue) => d.field("queued", &queue.entries.len()),
            Err(_) => d.field("queued", &format_args!("<locked>")),
        };
        d.field("position", &self.cursor)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
