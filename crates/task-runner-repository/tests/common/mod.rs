//! Test support: a hand-cranked executor, streams that report their own drop, a counting waker,
//! a log of what listeners see, and a watchdog for work that must not hang.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use futures::Stream;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

use keyrunner_task_runner_repository::{
    Driver, Event, Spawn, State, TaskRunnerRepository, spawn_fn,
};

/// A spawner that queues runs until the test cranks them with [`Manual::drive`], so every
/// interleaving in a test is chosen by the test, not by a scheduler.
#[derive(Clone, Default)]
pub struct Manual {
    queue: Arc<Mutex<Vec<Driver>>>,
}

impl Manual {
    pub fn repository<K, S, E>(&self) -> TaskRunnerRepository<K, S, E>
    where
        K: Eq + std::hash::Hash + Clone + Send + Sync + std::fmt::Debug + 'static,
        S: Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        TaskRunnerRepository::new(self.spawner())
    }

    /// A spawner that queues drivers for [`drive`](Self::drive).
    pub fn spawner(&self) -> impl Spawn + use<> {
        let queue = Arc::clone(&self.queue);
        spawn_fn(move |driver| queue.lock().unwrap().push(driver))
    }

    /// Runs queued drivers on `pool` until none can make progress.
    pub fn drive(&self, pool: &mut LocalPool) {
        loop {
            let queued: Vec<_> = std::mem::take(&mut *self.queue.lock().unwrap());
            if queued.is_empty() {
                pool.run_until_stalled();
                if self.queue.lock().unwrap().is_empty() {
                    return;
                }
                continue;
            }
            for future in queued {
                pool.spawner().spawn_local(future).unwrap();
            }
        }
    }

    /// How many drivers are queued but not yet handed to a pool.
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap().len()
    }
}

/// Counts live streams: incremented on creation, decremented on drop.
#[derive(Clone, Default)]
pub struct Alive(Arc<AtomicUsize>);

impl Alive {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    pub fn track<St>(&self, inner: St) -> Tracked<St> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Tracked {
            inner,
            alive: self.clone(),
        }
    }
}

/// A stream that decrements its [`Alive`] counter when dropped.
pub struct Tracked<St> {
    inner: St,
    alive: Alive,
}

impl<St> Drop for Tracked<St> {
    fn drop(&mut self) {
        self.alive.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<St: Stream + Unpin> Stream for Tracked<St> {
    type Item = St::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// What a listener saw, in order.
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Clone> Log<T> {
    pub fn push(&self, value: T) {
        self.0.lock().unwrap().push(value);
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }

    /// Everything seen so far, leaving the log empty.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The states a [`recorder`] saw.
pub type Seen<P, E> = Arc<Mutex<Vec<State<P, E>>>>;

/// A listener of a repository's events.
pub trait Listener<P, E>: Fn(&Event<P, E>) + Send + Sync + 'static {}

impl<P, E, F: Fn(&Event<P, E>) + Send + Sync + 'static> Listener<P, E> for F {}

/// Records the state of every `State` event a listener sees (a snapshot repository has no
/// other kind).
pub fn recorder<P: Send + Sync + 'static, E: Send + Sync + 'static>()
-> (Seen<P, E>, impl Listener<P, E>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (
        seen,
        on_state(move |state: &State<P, E>| sink.lock().unwrap().push(state.clone())),
    )
}

/// A listener of events made of a listener of states: deltas are ignored.
pub fn on_state<P, E>(
    listener: impl Fn(&State<P, E>) + Send + Sync + 'static,
) -> impl Fn(&Event<P, E>) + Send + Sync + 'static {
    move |event: &Event<P, E>| {
        if let Some(state) = event.state() {
            listener(state);
        }
    }
}

/// A listener that logs every event.
pub fn events<P: Send + Sync + 'static, E: Send + Sync + 'static>()
-> (Log<Event<P, E>>, impl Listener<P, E>) {
    let log = Log::default();
    let sink = log.clone();
    (log, move |event: &Event<P, E>| sink.push(event.clone()))
}

/// The state of a `State` event (panics on a delta).
pub fn state_of<P, E>(event: Event<P, E>) -> State<P, E> {
    match event {
        Event::State { state, .. } => state,
        Event::Delta { position, .. } => panic!("expected a state, got a delta at {position}"),
    }
}

/// Idle with `last`, no progress.
pub fn idle<P, E>(last: Option<keyrunner_task_runner_repository::Outcome<E>>) -> State<P, E> {
    State::Idle {
        last,
        progress: None,
    }
}

/// Idle with `last` and the last run's final progress.
pub fn ended<P, E>(
    last: keyrunner_task_runner_repository::Outcome<E>,
    progress: Option<P>,
) -> State<P, E> {
    State::Idle {
        last: Some(last),
        progress: progress.map(Arc::new),
    }
}

/// Running `run` with `progress`.
pub fn running<P, E>(
    run: keyrunner_task_runner_repository::RunId,
    progress: Option<P>,
) -> State<P, E> {
    State::Running {
        run,
        progress: progress.map(Arc::new),
    }
}

/// A waker that counts its wake-ups.
#[derive(Default)]
pub struct CountingWaker(AtomicUsize);

impl CountingWaker {
    pub fn new() -> (Arc<Self>, Waker) {
        let counter = Arc::new(Self::default());
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `future` once with a no-op waker; whether it is ready.
pub fn poll_once<F: std::future::Future + Unpin + ?Sized>(future: &mut F) -> bool {
    let waker = futures::task::noop_waker();
    Pin::new(future)
        .poll(&mut Context::from_waker(&waker))
        .is_ready()
}

/// How long a test waits for work that must finish promptly before it calls it a hang.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// Runs `f` on a thread of its own; `false` if it has not returned within [`WATCHDOG`] (a
/// deadlock), in which case the thread is left behind.
pub fn finishes(f: impl FnOnce() + Send + 'static) -> bool {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    finished.recv_timeout(WATCHDOG).is_ok()
}
