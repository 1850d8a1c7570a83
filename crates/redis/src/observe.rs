//! [`Subscription`] and [`StateStream`]: watching a key from any replica.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use keyrunner_task_runner_repository::State;

use crate::error::Error;
use crate::run::lock;
use crate::transition::Transition;

/// How many items a [`StateStream`] holds for a consumer that does not keep up; beyond, the
/// oldest are dropped (consecutive progress of one run is merged first).
pub const STREAM_CAPACITY: usize = 64;

/// A listener registered with
/// [`ClusterRepository::listen`](crate::ClusterRepository::listen).
///
/// Dropping it (or calling [`unsubscribe`](Self::unsubscribe)) removes the listener; the key's
/// Redis subscription on this replica goes with its last listener, stream or handle.
#[must_use = "dropping a subscription removes the listener"]
pub struct Subscription {
    // Field order is drop order: the listener goes before the key's watch.
    _listener: keyrunner_subject::Subscription,
    _watch: Box<dyn Send + Sync>,
}

impl Subscription {
    pub(crate) fn new(
        listener: keyrunner_subject::Subscription,
        watch: Box<dyn Send + Sync>,
    ) -> Self {
        Self {
            _listener: listener,
            _watch: watch,
        }
    }

    /// Removes the listener (the same as dropping it).
    pub fn unsubscribe(self) {}
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// A stream of one key's transitions, from every replica: its current state first, then every
/// transition in order, each with its position ([`Transition::seq`]).
///
/// A slow consumer never makes anyone wait. Consecutive progress items of one run that the
/// consumer has not taken yet are merged into the latest one; beyond [`STREAM_CAPACITY`] items
/// the oldest are dropped. Errors (a message or a stored state that could not be decoded, a
/// watch that could not be established while Redis was unreachable) come as `Err` items, and the
/// stream goes on.
///
/// The stream ends after this replica shut down (explicitly, or when its last handle was
/// dropped), with a last [`ShutDown`](crate::ErrorKind::ShutDown) error item.
#[must_use = "streams do nothing unless polled"]
pub struct StateStream<P, E> {
    shared: Arc<Mutex<Queue<P, E>>>,
    // Keeps the listener (and so the key's watch) alive.
    _subscription: Subscription,
}

pub(crate) struct Queue<P, E> {
    items: VecDeque<Result<Transition<P, E>, Error>>,
    waker: Option<Waker>,
    /// The replica shut down: the stream ends once the items queued are taken.
    ended: bool,
}

impl<P: Clone, E> Queue<P, E> {
    pub(crate) fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            items: VecDeque::new(),
            waker: None,
            ended: false,
        }))
    }

    pub(crate) fn push(shared: &Mutex<Self>, item: &Result<Transition<P, E>, Error>) {
        let waker = {
            let mut queue = lock(shared);
            if queue.ended {
                return;
            }
            if let Err(error) = item
                && error.kind() == crate::error::ErrorKind::ShutDown
            {
                queue.ended = true;
            }
            if let (
                Some(Ok(Transition {
                    state:
                        State::Running {
                            progress: Some(queued),
                            ..
                        },
                    fence: queued_fence,
                    seq: queued_seq,
                })),
                Ok(Transition {
                    state:
                        State::Running {
                            progress: Some(progress),
                            ..
                        },
                    fence,
                    seq,
                }),
            ) = (queue.items.back_mut(), item)
                && queued_fence == fence
            {
                *queued = progress.clone();
                *queued_seq = *seq;
                return;
            }
            if queue.items.len() == STREAM_CAPACITY {
                queue.items.pop_front();
            }
            queue.items.push_back(item.clone());
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<P, E> StateStream<P, E> {
    pub(crate) fn new(shared: Arc<Mutex<Queue<P, E>>>, subscription: Subscription) -> Self {
        Self {
            shared,
            _subscription: subscription,
        }
    }
}

impl<P, E> Stream for StateStream<P, E> {
    type Item = Result<Transition<P, E>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut queue = lock(&self.shared);
        match queue.items.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if queue.ended => Poll::Ready(None),
            None => {
                queue.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<P, E> fmt::Debug for StateStream<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("StateStream");
        match self.shared.try_lock() {
            Ok(queue) => debug.field("queued", &queue.items.len()),
            Err(_) => debug.field("queued", &format_args!("<locked>")),
        };
        debug.finish_non_exhaustive()
    }
}
