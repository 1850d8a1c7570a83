//! Watching keys across replicas.
//!
//! A replica holds **one Redis subscription per watched key**, shared by every local listener,
//! stream and remote handle of the key, and reclaimed with the last of them (a
//! [`Registry`](keyrunner_resource_registry::Registry) of [`Watch`]es). One dispatcher task per
//! replica turns what the key channels and the snapshots say into one gap-free, duplicate-free
//! history per key:
//!
//! - **Subscribe first, then snapshot.** On every subscribe confirmation (the first one, and each
//!   one after a reconnect) the dispatcher reads the key's stored state; events arriving
//!   meanwhile are held and replayed after it.
//! - **Positions.** Every event carries its fence and sequence. An event continues the history
//!   only if its sequence is the next one (a run's start says which sequence it follows); older
//!   ones are dropped as duplicates; a gap triggers a new snapshot, which is delivered if it is
//!   newer (intermediate progress may be skipped, never the latest state).
//! - **Epochs.** A snapshot under another epoch than the cursor's (Redis lost its data) is
//!   delivered as it is, and the history restarts from it.
//!
//! Control messages (the end of one of this replica's own runs, decided elsewhere) never wait in
//! the dispatcher's queue: the subscription's push handler fires the run's abort signal itself.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use event_listener::Event as Notify;
use keyrunner_subject::Subject;
use keyrunner_task_runner_repository::{Event, Position, RunId, State};
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::run::{Ending, LocalRuns, discard, lock, reason_of};
use crate::runtime::Rt;
use crate::store::Store;
use crate::wire::{Control, Kind, Message, decode_stored};

/// What a listener or a stream receives: an event, or a typed error (a message or a stored
/// state that could not be decoded, a watch that could not be established).
pub(crate) type Item<P, E> = Result<Event<P, E>, Error>;

/// What a watch hands its local listeners in one step: events in order (a batch of deltas goes
/// as one delivery), and the key's state after them, as an [`Event::State`]: what a listener
/// joining now starts from.
pub(crate) struct Delivery<P, E> {
    pub(crate) items: Vec<Item<P, E>>,
    pub(crate) current: Option<Event<P, E>>,
}

/// Pushes beyond this wait in no queue: they are dropped and every watched key is read again.
const MAX_QUEUED_PUSHES: usize = 1 << 16;

/// Events held per key while its snapshot is being read; beyond, they are dropped for the
/// snapshot (which is at least as new).
const MAX_HELD: usize = 4096;

/// A watched key: its local fan-out and whether its history has started.
pub(crate) struct Watch<P, E> {
    member: String,
    pub(crate) subject: Subject<Delivery<P, E>>,
    ready: Mutex<Readiness>,
    ready_event: Notify,
    queue: Weak<Queue<P, E>>,
}

#[derive(Clone)]
enum Readiness {
    Pending,
    Ready,
    Failed(Error),
}

impl<P, E> Watch<P, E>
where
    P: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub(crate) fn new(member: String, queue: &Arc<Queue<P, E>>) -> Arc<Self> {
        let watch = Arc::new(Self {
            member: member.clone(),
            subject: Subject::new(),
            ready: Mutex::new(Readiness::Pending),
            ready_event: Notify::new(),
            queue: Arc::downgrade(queue),
        });
        queue.push(Msg::Watch {
            member,
            watch: Arc::downgrade(&watch),
        });
        watch
    }

    /// Waits until the key's history has started here (its first snapshot was delivered), or
    /// the watch failed to start.
    pub(crate) async fn ready(&self) -> Result<(), Error> {
        loop {
            match lock(&self.ready).clone() {
                Readiness::Ready => return Ok(()),
                Readiness::Failed(error) => return Err(error),
                Readiness::Pending => {}
            }
            let listener = self.ready_event.listen();
            if !matches!(*lock(&self.ready), Readiness::Pending) {
                continue;
            }
            listener.await;
        }
    }

    fn set_ready(&self, ready: Readiness) {
        *lock(&self.ready) = ready;
        self.ready_event.notify(usize::MAX);
    }

    fn is_ready(&self) -> bool {
        matches!(*lock(&self.ready), Readiness::Ready)
    }

    /// Delivers items to every local listener, with the key's state after them. A listener's
    /// panic is caught here: it must not stop the dispatcher (the other listeners still got the
    /// items).
    fn deliver(&self, items: Vec<Item<P, E>>, current: Option<Event<P, E>>) {
        let delivery = Delivery { items, current };
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| self.subject.next(delivery)))
        {
            drop(payload);
        }
    }

    /// Delivers an error, with the state known before it.
    fn deliver_error(&self, error: Error, current: Option<Event<P, E>>) {
        self.deliver(vec![Err(error)], current);
    }
}

impl<P, E> Drop for Watch<P, E> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.upgrade() {
            queue.push(Msg::Unwatch {
                member: std::mem::take(&mut self.member),
            });
        }
    }
}

impl<P, E> fmt::Debug for Watch<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

/// What the dispatcher is told.
pub(crate) enum Msg<P, E> {
    /// A push from the subscription connection (a message, a subscribe confirmation, a
    /// disconnection).
    Push(PushInfo),
    Watch {
        member: String,
        watch: Weak<Watch<P, E>>,
    },
    Unwatch {
        member: String,
    },
    Snapshot {
        member: String,
        result: Result<crate::store::Stored, Error>,
    },
    SubscribeFailed {
        member: String,
        error: Error,
    },
    /// Retry what failed (subscriptions, snapshots); sent by the reaper every TTL/4.
    Tick,
    /// Read every watched key again (the epoch changed, or pushes were dropped).
    ResyncAll,
    /// This replica shut down: every watch ends with a `ShutDown` error, and so does every
    /// watch started later.
    Shutdown,
}

/// The dispatcher's queue.
pub(crate) struct Queue<P, E> {
    messages: Mutex<VecDeque<Msg<P, E>>>,
    notify: Notify,
    overflowed: AtomicBool,
    closed: AtomicBool,
}

impl<P, E> Queue<P, E> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            messages: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            overflowed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn push(&self, msg: Msg<P, E>) {
        {
            let mut messages = lock(&self.messages);
            if matches!(msg, Msg::Push(_)) && messages.len() >= MAX_QUEUED_PUSHES {
                // A listener on this replica is too slow: drop, and resynchronise every key.
                self.overflowed.store(true, Ordering::SeqCst);
                return;
            }
            messages.push_back(msg);
        }
        self.notify.notify(1);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify(usize::MAX);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Everything queued, waiting for at least one message; `None` once closed.
    async fn next_batch(&self) -> Option<VecDeque<Msg<P, E>>> {
        loop {
            if self.is_closed() {
                return None;
            }
            {
                let mut messages = lock(&self.messages);
                if !messages.is_empty() {
                    return Some(std::mem::take(&mut *messages));
                }
            }
            let listener = self.notify.listen();
            if self.is_closed() || !lock(&self.messages).is_empty() {
                continue;
            }
            listener.await;
        }
    }
}

/// Subscribe and unsubscribe commands, sent in order by one worker (so an unsubscribe can never
/// overtake a later subscribe of the same channel).
pub(crate) struct Subscriptions {
    commands: Mutex<VecDeque<(bool, String, String)>>,
    notify: Notify,
    closed: AtomicBool,
}

impl Subscriptions {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            commands: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        })
    }

    fn subscribe(&self, channel: String, member: String) {
        lock(&self.commands).push_back((true, channel, member));
        self.notify.notify(1);
    }

    fn unsubscribe(&self, channel: String) {
        lock(&self.commands).push_back((false, channel, String::new()));
        self.notify.notify(1);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify(usize::MAX);
    }

    /// The worker: sends each command within the call timeout; a failed subscribe is reported
    /// to the dispatcher (which retries on its next tick).
    pub(crate) async fn work<P, E>(
        self: Arc<Self>,
        store: Arc<Store>,
        mut conn: ConnectionManager,
        queue: Arc<Queue<P, E>>,
    ) {
        loop {
            let next = lock(&self.commands).pop_front();
            let Some((subscribe, channel, member)) = next else {
                if self.closed.load(Ordering::SeqCst) {
                    return;
                }
                let listener = self.notify.listen();
                if lock(&self.commands).is_empty() && !self.closed.load(Ordering::SeqCst) {
                    listener.await;
                }
                continue;
            };
            if subscribe {
                let result = store
                    .rt
                    .timeout(store.timeout, conn.subscribe(&channel))
                    .await
                    .and_then(|result| result.map_err(Error::redis));
                if let Err(error) = result {
                    queue.push(Msg::SubscribeFailed { member, error });
                }
            } else {
                // Best effort: a failed unsubscribe only leaves a channel nobody listens to.
                let _ = store
                    .rt
                    .timeout(store.timeout, conn.unsubscribe(&channel))
                    .await;
            }
        }
    }
}

/// Routes the subscription connection's pushes: control messages are handled on the spot,
/// everything else goes to the dispatcher.
pub(crate) struct Router<P, E> {
    pub(crate) control: String,
    pub(crate) queue: Arc<Queue<P, E>>,
    pub(crate) runs: Arc<LocalRuns<E>>,
    pub(crate) rt: Rt,
}

impl<P, E> Router<P, E>
where
    E: DeserializeOwned + Send + Sync + 'static,
{
    pub(crate) fn route(&self, push: PushInfo) {
        if push.kind == PushKind::Message
            && let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice()
            && channel.as_slice() == self.control.as_bytes()
        {
            self.on_control(payload);
            return;
        }
        self.queue.push(Msg::Push(push));
    }

    /// One of this replica's runs ended elsewhere: fire its signal now, on a task of its own. The
    /// signal's callbacks are user code, and this runs on the subscription connection's reader:
    /// a slow callback would hold up every message of this replica, a panicking one would kill
    /// the connection (its caught panic is dropped: no call of the user's made this stop). A
    /// message that cannot be decoded is dropped: the run's next write (within TTL/3) finds out
    /// the same from Redis.
    fn on_control(&self, payload: &[u8]) {
        let Ok(control) = serde_json::from_slice::<Control<E>>(payload) else {
            return;
        };
        // A run not registered yet (its acquisition's answer is still being taken) finds its
        // end when it is.
        if let Some((run, outcome)) = self.runs.ended_elsewhere(&control.k, control.f, control.x) {
            self.rt.spawn(Box::pin(async move {
                let reason = reason_of(&outcome);
                discard(run.end(Ending::Recorded(outcome), reason));
            }));
        }
    }
}

/// Ends a watch: a last `ShutDown` error (streams end after it), and `listen` refused.
fn end<P, E>(watch: &Watch<P, E>)
where
    P: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    watch.set_ready(Readiness::Failed(Error::shut_down()));
    watch.deliver_error(Error::shut_down(), None);
}

/// Where a key's history stands on this replica.
struct Cursor<P, E> {
    epoch: String,
    /// The key's sequence (Redis's, continuous across runs).
    seq: u64,
    /// The run of the last event, and the sequence at which it started.
    fence: Option<u64>,
    started: u64,
    /// The fence of the run the key is running, if it is.
    running: Option<u64>,
    /// The key's state now, as an `Event::State`.
    current: Event<P, E>,
}

impl<P, E> Cursor<P, E> {
    fn position(&self, seq: u64) -> Position {
        Position::new(self.fence.map(RunId::new), seq.saturating_sub(self.started))
    }
}

struct Key<P, E> {
    watch: Weak<Watch<P, E>>,
    channel: String,
    /// A subscribe confirmation came since the last disconnection.
    subscribed: bool,
    /// A subscribe was sent and not answered.
    subscribing: bool,
    /// A snapshot read is in flight.
    reading: bool,
    /// A snapshot is needed (a gap, a reconnection, an undecodable message).
    resync: bool,
    /// An error was delivered for the current outage; not again until a success.
    failing: bool,
    cursor: Option<Cursor<P, E>>,
    held: Vec<Message<P, E>>,
}

impl<P, E> Key<P, E> {
    fn current(&self) -> Option<Event<P, E>> {
        self.cursor.as_ref().map(|cursor| cursor.current.clone())
    }
}

/// The dispatcher: one per replica, the only one that moves the cursors.
pub(crate) struct Dispatcher<P, E> {
    store: Arc<Store>,
    queue: Arc<Queue<P, E>>,
    subscriptions: Arc<Subscriptions>,
    on_epoch: crate::run::OnEpoch,
    keys: HashMap<String, Key<P, E>>,
    shut_down: bool,
}

impl<P, E> Dispatcher<P, E>
where
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    E: DeserializeOwned + Send + Sync + 'static,
{
    pub(crate) fn new(
        store: Arc<Store>,
        queue: Arc<Queue<P, E>>,
        subscriptions: Arc<Subscriptions>,
        on_epoch: crate::run::OnEpoch,
    ) -> Self {
        Self {
            store,
            queue,
            subscriptions,
            on_epoch,
            keys: HashMap::new(),
            shut_down: false,
        }
    }

    pub(crate) async fn run(mut self) {
        while let Some(batch) = self.queue.next_batch().await {
            for msg in batch {
                self.handle(msg);
            }
            if self.queue.overflowed.swap(false, Ordering::SeqCst) {
                self.resync_all();
            }
        }
        // The repository is gone: its watches end.
        self.shut_down();
    }

    /// Ends every watch (and every later one) with a `ShutDown` error.
    fn shut_down(&mut self) {
        self.shut_down = true;
        for key in self.keys.values_mut() {
            key.held.clear();
            if let Some(watch) = key.watch.upgrade() {
                end(&watch);
            }
        }
    }

    fn handle(&mut self, msg: Msg<P, E>) {
        match msg {
            Msg::Push(push) => self.on_push(push),
            Msg::Watch { member, watch } => self.on_watch(member, watch),
            Msg::Unwatch { member } => {
                // Only if no new watch of the same key took the entry over meanwhile.
                if self
                    .keys
                    .get(&member)
                    .is_some_and(|key| key.watch.strong_count() == 0)
                    && let Some(key) = self.keys.remove(&member)
                {
                    self.subscriptions.unsubscribe(key.channel);
                }
            }
            Msg::Snapshot { member, result } => self.on_snapshot(&member, result),
            Msg::SubscribeFailed { member, error } => {
                if let Some(key) = self.keys.get_mut(&member) {
                    key.subscribing = false;
                    if let Some(watch) = key.watch.upgrade() {
                        if !watch.is_ready() {
                            watch.set_ready(Readiness::Failed(error.clone()));
                        }
                        if !key.failing {
                            key.failing = true;
                            watch.deliver_error(error, key.current());
                        }
                    }
                }
            }
            Msg::Tick => self.tick(),
            Msg::ResyncAll => self.resync_all(),
            Msg::Shutdown => self.shut_down(),
        }
    }

    fn on_watch(&mut self, member: String, watch: Weak<Watch<P, E>>) {
        if self.shut_down {
            if let Some(watch) = watch.upgrade() {
                end(&watch);
            }
            return;
        }
        match self.keys.get_mut(&member) {
            Some(key) => {
                // The key's previous watch is gone (its `Unwatch` is still queued): the new one
                // starts its own history, on the subscription we still hold.
                key.watch = watch;
                key.cursor = None;
                key.held.clear();
                key.failing = false;
                if key.subscribed {
                    self.read(&member);
                } else if !key.subscribing {
                    key.subscribing = true;
                    self.subscriptions.subscribe(key.channel.clone(), member);
                }
            }
            None => {
                let channel = self.store.layout.channel(&member);
                self.subscriptions
                    .subscribe(channel.clone(), member.clone());
                self.keys.insert(
                    member,
                    Key {
                        watch,
                        channel,
                        subscribed: false,
                        subscribing: true,
                        reading: false,
                        resync: true,
                        failing: false,
                        cursor: None,
                        held: Vec::new(),
                    },
                );
            }
        }
    }

    fn on_push(&mut self, push: PushInfo) {
        if self.shut_down {
            return;
        }
        match push.kind {
            PushKind::Message => {
                let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice()
                else {
                    return;
                };
                let Ok(channel) = std::str::from_utf8(channel) else {
                    return;
                };
                let Some(member) = self.store.layout.member_of_channel(channel) else {
                    return;
                };
                let member = member.to_owned();
                match serde_json::from_slice::<Message<P, E>>(payload) {
                    Ok(message) => self.on_message(&member, message),
                    Err(error) => {
                        let Some(key) = self.keys.get_mut(&member) else {
                            return;
                        };
                        if let Some(watch) = key.watch.upgrade() {
                            let error = Error::new(crate::error::ErrorKind::Decode)
                                .detail(format_args!("a transition on `{channel}`: {error}"))
                                .source(error);
                            watch.deliver_error(error, key.current());
                        }
                        // Whatever it said, the stored state says it too.
                        key.resync = true;
                        self.read(&member);
                    }
                }
            }
            PushKind::Subscribe => {
                let Some(Value::BulkString(channel)) = push.data.first() else {
                    return;
                };
                let Some(member) = std::str::from_utf8(channel)
                    .ok()
                    .and_then(|channel| self.store.layout.member_of_channel(channel))
                    .map(str::to_owned)
                else {
                    return;
                };
                if let Some(key) = self.keys.get_mut(&member) {
                    key.subscribed = true;
                    key.subscribing = false;
                    // Subscribed first, now the snapshot: nothing published from here on is
                    // missed, and what was published before is in the stored state.
                    key.resync = true;
                    self.read(&member);
                }
            }
            PushKind::Disconnection => {
                for key in self.keys.values_mut() {
                    key.subscribed = false;
                }
            }
            _ => {}
        }
    }

    /// Starts reading `member`'s stored state, unless a read is in flight.
    fn read(&mut self, member: &str) {
        let Some(key) = self.keys.get_mut(member) else {
            return;
        };
        if key.reading {
            return;
        }
        key.reading = true;
        let store = Arc::clone(&self.store);
        let queue = Arc::clone(&self.queue);
        let member = member.to_owned();
        self.store.rt.spawn(Box::pin(async move {
            let result = store.read(&member).await;
            queue.push(Msg::Snapshot { member, result });
        }));
    }

    fn on_snapshot(&mut self, member: &str, result: Result<crate::store::Stored, Error>) {
        let Some(key) = self.keys.get_mut(member) else {
            return;
        };
        key.reading = false;
        if self.shut_down {
            return;
        }
        let Some(watch) = key.watch.upgrade() else {
            return;
        };
        let stored = match result {
            Ok(stored) => stored,
            Err(error) => {
                // Retried on the next tick.
                if !watch.is_ready() {
                    watch.set_ready(Readiness::Failed(error.clone()));
                }
                if !key.failing {
                    key.failing = true;
                    watch.deliver_error(error, key.current());
                }
                return;
            }
        };
        key.failing = false;
        if *self.store.epoch() != stored.epoch {
            (self.on_epoch)(stored.epoch.clone());
        }
        let snapshot = match decode_stored::<P, E>(&stored, &self.store.layout.hash(member)) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // Corrupt data stays corrupt: report it, and read again only when the key
                // changes (a message) or on a resynchronisation.
                key.resync = false;
                key.held.clear();
                watch.deliver_error(error.clone(), key.current());
                if !watch.is_ready() {
                    watch.set_ready(Readiness::Failed(error));
                }
                return;
            }
        };
        // Newer, or under another epoch (Redis lost its data: the history restarts from what it
        // stores now), but never the same position twice.
        let fence = snapshot.position.run_id().map(RunId::get);
        let newer = match &key.cursor {
            None => true,
            Some(cursor) => {
                snapshot.seq > cursor.seq
                    || (cursor.epoch != stored.epoch
                        && (cursor.fence, cursor.seq) != (fence, snapshot.seq))
            }
        };
        if let (false, Some(cursor)) = (newer, &mut key.cursor) {
            cursor.epoch = stored.epoch;
        } else {
            let event = Event::State {
                position: snapshot.position,
                state: snapshot.state,
            };
            let running = match &event {
                Event::State {
                    state: State::Running { .. },
                    ..
                } => fence,
                _ => None,
            };
            key.cursor = Some(Cursor {
                epoch: stored.epoch,
                seq: snapshot.seq,
                fence,
                started: snapshot.started,
                running,
                current: event.clone(),
            });
            watch.deliver(vec![Ok(event.clone())], Some(event));
        }
        key.resync = false;
        if !watch.is_ready() {
            watch.set_ready(Readiness::Ready);
        }
        let held = std::mem::take(&mut key.held);
        for message in held {
            self.on_message(member, message);
        }
    }

    /// A message of the key's channel: delivered if it continues the key's history, dropped if
    /// it is older, held if the history has not started yet, and a new read on a gap.
    fn on_message(&mut self, member: &str, message: Message<P, E>) {
        let Some(key) = self.keys.get_mut(member) else {
            return;
        };
        let Some(watch) = key.watch.upgrade() else {
            return;
        };
        let (Some(cursor), false) = (&mut key.cursor, key.reading) else {
            // The history starts with the snapshot being read: hold the message until then.
            if key.held.len() < MAX_HELD {
                key.held.push(message);
            }
            return;
        };
        let Message {
            f: fence,
            q: first,
            b: before,
            s: kind,
            p: snapshots,
            d: deltas,
            a: accumulated,
            x: outcome,
        } = message;
        let run = RunId::new(fence);
        let gap = match (kind, snapshots, deltas) {
            // A run starting.
            (Kind::Running, None, None) => {
                if before == Some(cursor.seq) {
                    cursor.seq = first;
                    cursor.fence = Some(fence);
                    cursor.started = first;
                    cursor.running = Some(fence);
                    let event = Event::State {
                        position: Position::new(Some(run), 0),
                        state: State::Running {
                            run,
                            progress: None,
                        },
                    };
                    cursor.current = event.clone();
                    watch.deliver(vec![Ok(event.clone())], Some(event));
                    false
                } else {
                    first > cursor.seq
                }
            }
            // Items: snapshots replace the progress, deltas are folded into it.
            (Kind::Running, snapshots, deltas) => {
                let is_delta = deltas.is_some();
                let items = snapshots.or(deltas).unwrap_or_default();
                let last = first + items.len() as u64 - 1;
                if items.is_empty() || last <= cursor.seq {
                    false
                } else if first > cursor.seq + 1 || cursor.running != Some(fence) {
                    true
                } else {
                    let mut events = Vec::with_capacity(items.len());
                    for (seq, item) in (first..).zip(items) {
                        if seq <= cursor.seq {
                            continue;
                        }
                        cursor.seq = seq;
                        let position = cursor.position(seq);
                        events.push(Ok(if is_delta {
                            Event::Delta {
                                position,
                                delta: Arc::new(item),
                            }
                        } else {
                            let state = State::Running {
                                run,
                                progress: Some(Arc::new(item)),
                            };
                            cursor.current = Event::State { position, state };
                            cursor.current.clone()
                        }));
                    }
                    if is_delta {
                        cursor.current = Event::State {
                            position: cursor.position(cursor.seq),
                            state: State::Running {
                                run,
                                progress: accumulated.map(Arc::new),
                            },
                        };
                    }
                    // One delivery per message: a listener joining between two starts from
                    // the state after the whole batch.
                    watch.deliver(events, Some(cursor.current.clone()));
                    false
                }
            }
            (Kind::Idle, _, _) => {
                if first == cursor.seq + 1 && cursor.running == Some(fence) {
                    cursor.seq = first;
                    cursor.running = None;
                    // The run's final progress: what it had when it ended.
                    let progress = match &cursor.current {
                        Event::State {
                            state: State::Running { progress, .. },
                            ..
                        } => progress.clone(),
                        _ => None,
                    };
                    let event = Event::State {
                        position: cursor.position(first),
                        state: State::Idle {
                            last: outcome,
                            progress,
                        },
                    };
                    cursor.current = event.clone();
                    watch.deliver(vec![Ok(event.clone())], Some(event));
                    false
                } else {
                    first > cursor.seq
                }
            }
        };
        if gap {
            // Something was missed: the stored state is at least as new as this message.
            key.resync = true;
            self.read(member);
        }
    }

    fn tick(&mut self) {
        if self.shut_down {
            return;
        }
        let members: Vec<String> = self.keys.keys().cloned().collect();
        for member in members {
            let Some(key) = self.keys.get_mut(&member) else {
                continue;
            };
            if key.watch.strong_count() == 0 {
                continue;
            }
            if !key.subscribed && !key.subscribing {
                key.subscribing = true;
                self.subscriptions
                    .subscribe(key.channel.clone(), member.clone());
            } else if key.subscribed && key.resync {
                self.read(&member);
            }
        }
    }

    fn resync_all(&mut self) {
        let members: Vec<String> = self.keys.keys().cloned().collect();
        for member in members {
            if let Some(key) = self.keys.get_mut(&member) {
                key.resync = true;
            }
            self.read(&member);
        }
    }
}
