//! The hand-rolled task runner: `DashMap<K, (CancellationToken, watch::Sender<State>)>` plus a
//! spawned task per run.
//!
//! It refuses a second run on a running key, sets the key idle on stop (at once) and on
//! completion, catches a panicking task, discards progress that arrives after a stop, and forgets
//! an idle key nobody watches. Every run sends through `watch` three times: running, progress,
//! idle.

use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerOutcome {
    Completed,
    Stopped,
    Panicked,
}

/// A key's state, as the hand-roll publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerState<S> {
    Idle { last: Option<PeerOutcome> },
    Running { progress: Option<S> },
}

/// A second run on a running key.
#[derive(Debug)]
pub(crate) struct Busy;

/// Where runs are spawned: tokio or smol.
pub(crate) trait PeerSpawn: Clone + Send + Sync + 'static {
    type Handle: Future<Output = PeerOutcome> + Send;

    fn spawn(&self, future: impl Future<Output = PeerOutcome> + Send + 'static) -> Self::Handle;

    /// Cancels the task and waits until it is gone.
    fn cancel(handle: Self::Handle) -> impl Future<Output = ()> + Send;
}

/// `tokio::spawn`.
#[derive(Clone)]
pub(crate) struct Tokio;

/// A tokio `JoinHandle`; a task that panicked or was aborted counts as panicked.
pub(crate) struct TokioHandle(tokio::task::JoinHandle<PeerOutcome>);

impl Future for TokioHandle {
    type Output = PeerOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PeerOutcome> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or(PeerOutcome::Panicked))
    }
}

impl PeerSpawn for Tokio {
    type Handle = TokioHandle;

    fn spawn(&self, future: impl Future<Output = PeerOutcome> + Send + 'static) -> TokioHandle {
        TokioHandle(tokio::spawn(future))
    }

    async fn cancel(handle: TokioHandle) {
        handle.0.abort();
        // Resolves (with a cancellation error) once the task has been dropped.
        let _ = handle.0.await;
    }
}

/// `Executor::spawn` on a smol executor; the handle is the `Task`.
#[derive(Clone)]
pub(crate) struct Smol(pub(crate) Arc<smol::Executor<'static>>);

impl PeerSpawn for Smol {
    type Handle = smol::Task<PeerOutcome>;

    fn spawn(&self, future: impl Future<Output = PeerOutcome> + Send + 'static) -> Self::Handle {
        self.0.spawn(future)
    }

    async fn cancel(handle: Self::Handle) {
        handle.cancel().await;
    }
}

struct Slot<S> {
    /// The run going on, if any: its id and its token.
    running: Option<(u64, CancellationToken)>,
    state: watch::Sender<PeerState<S>>,
}

/// The hand-rolled runner.
pub(crate) struct HandRolled<K, S, P> {
    keys: Arc<DashMap<K, Slot<S>>>,
    next_run: AtomicU64,
    spawner: P,
}

impl<K, S, P> HandRolled<K, S, P>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    P: PeerSpawn,
{
    pub(crate) fn new(spawner: P) -> Self {
        Self {
            keys: Arc::new(DashMap::new()),
            next_run: AtomicU64::new(1),
            spawner,
        }
    }

    /// Runs `task` on `key` unless it is running; the handle resolves once the task has ended.
    pub(crate) fn run<F, St>(&self, key: K, task: F) -> Result<P::Handle, Busy>
    where
        F: FnOnce(CancellationToken) -> St + Send + 'static,
        St: Stream<Item = S> + Send + 'static,
    {
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let state = match self.keys.entry(key.clone()) {
            Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                if slot.running.is_some() {
                    return Err(Busy);
                }
                slot.running = Some((id, token.clone()));
                slot.state
                    .send_replace(PeerState::Running { progress: None });
                slot.state.clone()
            }
            Entry::Vacant(vacant) => {
                let (state, _) = watch::channel(PeerState::Running { progress: None });
                vacant.insert(Slot {
                    running: Some((id, token.clone())),
                    state: state.clone(),
                });
                state
            }
        };
        let keys = Arc::clone(&self.keys);
        Ok(self.spawner.spawn(async move {
            let driven = AssertUnwindSafe(async {
                let mut stream = pin!(task(token.clone()));
                loop {
                    tokio::select! {
                        biased;
                        () = token.cancelled() => break PeerOutcome::Stopped,
                        item = stream.next() => match item {
                            // `stop` cancels under the watch lock: no progress after a stop.
                            Some(progress) => {
                                state.send_if_modified(|current| {
                                    if token.is_cancelled() {
                                        return false;
                                    }
                                    *current = PeerState::Running { progress: Some(progress) };
                                    true
                                });
                            }
                            None => break PeerOutcome::Completed,
                        },
                    }
                }
            })
            .catch_unwind()
            .await;
            let outcome = driven.unwrap_or(PeerOutcome::Panicked);
            if outcome != PeerOutcome::Stopped {
                // Idle, if this run still owns the key; forgotten if nobody watches it.
                keys.remove_if_mut(&key, |_, slot| {
                    if slot.running.as_ref().is_some_and(|(run, _)| *run == id) {
                        slot.running = None;
                        slot.state.send_replace(PeerState::Idle {
                            last: Some(outcome),
                        });
                    }
                    slot.running.is_none() && slot.state.receiver_count() == 0
                });
            }
            outcome
        }))
    }

    /// Stops the run going on at `key`, if any: the key is idle at once.
    pub(crate) fn stop(&self, key: &K) -> bool {
        let mut stopped = false;
        self.keys.remove_if_mut(key, |_, slot| {
            if let Some((_, token)) = slot.running.take() {
                slot.state.send_modify(|state| {
                    token.cancel();
                    *state = PeerState::Idle {
                        last: Some(PeerOutcome::Stopped),
                    };
                });
                stopped = true;
            }
            slot.state.receiver_count() == 0
        });
        stopped
    }

    /// Watches `key`'s state; the key is remembered while the receiver lives.
    pub(crate) fn subscribe(&self, key: K) -> watch::Receiver<PeerState<S>> {
        self.keys
            .entry(key)
            .or_insert_with(|| Slot {
                running: None,
                state: watch::channel(PeerState::Idle { last: None }).0,
            })
            .state
            .subscribe()
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn shrink_to_fit(&self) {
        self.keys.shrink_to_fit();
    }
}
