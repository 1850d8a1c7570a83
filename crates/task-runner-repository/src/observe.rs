//! Watching keys: [`Subscription`] and [`StateStream`].

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;

use crate::repository::Inner;
use crate::run::Slot;
use crate::state::State;
use crate::sync::{Mutex, lock};

/// Guard of a listener on one key: dropping it unsubscribes the listener.
///
/// While it lives, the key stays remembered (with its last outcome), even when idle.
#[must_use = "dropping a Subscription unsubscribes the listener"]
pub struct Subscription<K, S, E, H> {
    inner: keyrunner_pub_sub::Subscription<K, Slot<S, E>, H>,
}

impl<K, S, E, H> Subscription<K, S, E, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: BuildHasher,
{
    pub(crate) fn new(inner: keyrunner_pub_sub::Subscription<K, Slot<S, E>, H>) -> Self {
        Self { inner }
    }

    /// Removes the listener (the same as dropping the guard). Once this returns, the listener
    /// is not called again.
    pub fn unsubscribe(self) {
        self.inner.unsubscribe();
    }
}

impl<K, S, E, H> fmt::Debug for Subscription<K, S, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// How many undelivered transitions a [`StateStream`] keeps before it drops the oldest.
pub const STREAM_CAPACITY: usize = 64;

/// A stream of one key's states: its current state first, then every transition in order.
///
/// A slow consumer never makes the repository wait. Consecutive progress items of one run that
/// the consumer has not taken yet are merged into the latest one, so the consumer sees every
/// kind of transition (`Idle → Running(None) → Running(Some(latest)) → Idle(outcome)`) with the
/// freshest progress. If more than [`STREAM_CAPACITY`] transitions pile up (many whole runs
/// while the consumer sleeps), the oldest are dropped.
///
/// The stream keeps the key remembered and never ends on its own: drop it when done.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::{StreamExt, stream};
/// use keyrunner_task_runner_repository::{BoxFuture, Outcome, State, TaskRunnerRepository};
///
/// let repository: TaskRunnerRepository<&str, u32> =
///     TaskRunnerRepository::new(|future: BoxFuture| {
///         std::thread::spawn(move || futures::executor::block_on(future));
///     });
/// let mut states = repository.stream("job");
/// assert_eq!(states.next().await, Some(State::Idle { last: None }));
///
/// let handle = repository.run("job", |_| stream::iter([7])).unwrap();
/// let run = handle.run_id();
/// handle.await;
/// assert_eq!(states.next().await, Some(State::Running { run, progress: None }));
/// assert_eq!(states.next().await, Some(State::Running { run, progress: Some(7) }));
/// assert_eq!(states.next().await, Some(State::Idle { last: Some(Outcome::Completed) }));
/// # });
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct StateStream<S, E> {
    shared: Arc<Mutex<Queue<S, E>>>,
    // Keeps the listener (and so the key) alive; type-erased to keep the key types out.
    _subscription: Box<dyn Send + Sync>,
}

struct Queue<S, E> {
    states: VecDeque<State<S, E>>,
    waker: Option<Waker>,
}

impl<S, E> Queue<S, E> {
    fn push(&mut self, state: State<S, E>) {
        if let (
            Some(State::Running {
                run: queued,
                progress: Some(queued_progress),
            }),
            State::Running {
                run,
                progress: Some(_),
            },
        ) = (self.states.back_mut(), &state)
            && queued == run
        {
            if let State::Running {
                progress: Some(progress),
                ..
            } = state
            {
                *queued_progress = progress;
            }
            return;
        }
        if self.states.len() == STREAM_CAPACITY {
            self.states.pop_front();
        }
        self.states.push_back(state);
    }
}

impl<S, E> StateStream<S, E>
where
    S: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub(crate) fn new<K, H>(inner: &Inner<K, S, E, H>, key: K) -> Self
    where
        K: Eq + Hash + Clone + Send + Sync + 'static,
        H: BuildHasher + Send + Sync + 'static,
    {
        let shared = Arc::new(Mutex::new(Queue {
            states: VecDeque::new(),
            waker: None,
        }));
        let sink = Arc::clone(&shared);
        let subscription = inner.listen(
            key,
            move |state: &State<S, E>| {
                let waker = {
                    let mut queue = lock(&sink);
                    queue.push(state.clone());
                    queue.waker.take()
                };
                if let Some(waker) = waker {
                    waker.wake();
                }
            },
            true,
        );
        Self {
            shared,
            _subscription: Box::new(subscription),
        }
    }
}

impl<S, E> Stream for StateStream<S, E> {
    type Item = State<S, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<State<S, E>>> {
        let mut queue = lock(&self.shared);
        match queue.states.pop_front() {
            Some(state) => Poll::Ready(Some(state)),
            None => {
                queue.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<S, E> fmt::Debug for StateStream<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StateStream");
        match self.shared.try_lock() {
            Ok(queue) => d.field("queued", &queue.states.len()),
            Err(_) => d.field("queued", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}
