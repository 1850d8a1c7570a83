//! [`Subscription`] and [`EventStream`]: watching a key from any replica.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use keyrunner_task_runner_repository::{Event, State};

use crate::error::{Error, ErrorKind};
use crate::run::lock;
use crate::watch::{Delivery, Item};

/// How many events an [`EventStream`] holds for a consumer that does not keep up; beyond, it
/// drops them for one `State` event with the key's state (a resynchronisation) and goes on.
pub const STREAM_CAPACITY: usize = 1024;

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

/// A stream of one key's events, from every replica: a `State` event with its current state
/// first, then every event in order, each at its [`Position`](crate::Position).
///
/// A slow consumer never makes anyone wait. Snapshot items it has not taken yet are merged into
/// the latest one; every delta is kept, up to [`STREAM_CAPACITY`] events, beyond which the
/// stream drops what it holds for one `State` event with the key's state (a resync) and goes
/// on with the events after it. Errors (a message or a stored state that could not be decoded,
/// a watch that could not be established while Redis was unreachable) come as `Err` items, and
/// the stream goes on.
///
/// The stream ends after this replica shut down (explicitly, or when its last handle was
/// dropped), with a last [`ShutDown`](crate::ErrorKind::ShutDown) error item.
#[must_use = "streams do nothing unless polled"]
pub struct EventStream<P, E> {
    shared: Arc<Mutex<Queue<P, E>>>,
    // Keeps the listener (and so the key's watch) alive.
    _subscription: Subscription,
}

pub(crate) struct Queue<P, E> {
    items: VecDeque<Item<P, E>>,
    waker: Option<Waker>,
    /// Nothing delivered yet: the first delivery gives the key's current state.
    fresh: bool,
    /// The replica shut down: the stream ends once the items queued are taken.
    ended: bool,
}

impl<P, E> Queue<P, E> {
    pub(crate) fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            items: VecDeque::new(),
            waker: None,
            fresh: true,
            ended: false,
        }))
    }

    pub(crate) fn push(shared: &Mutex<Self>, delivery: &Delivery<P, E>) {
        let waker = {
            let mut queue = lock(shared);
            if queue.ended {
                return;
            }
            if std::mem::take(&mut queue.fresh)
                && let Some(current) = &delivery.current
            {
                queue.items.push_back(Ok(current.clone()));
            } else if queue.items.len() + delivery.items.len() > STREAM_CAPACITY
                && let Some(current) = &delivery.current
            {
                // Too far behind: start again from the key's state.
                queue.items.clear();
                queue.items.push_back(Ok(current.clone()));
            } else {
                for item in &delivery.items {
                    queue.add(item);
                }
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn add(&mut self, item: &Item<P, E>) {
        match item {
            Err(error) if error.kind() == ErrorKind::ShutDown => self.ended = true,
            // A snapshot of the run whose snapshot waits at the back replaces it: latest value.
            Ok(Event::State {
                position,
                state: state @ State::Running { .. },
            }) => {
                if let Some(Ok(Event::State {
                    position: queued_position,
                    state: queued @ State::Running { .. },
                })) = self.items.back_mut()
                    && queued_position.run_id() == position.run_id()
                {
                    *queued_position = *position;
                    *queued = state.clone();
                    return;
                }
            }
            _ => {}
        }
        self.items.push_back(item.clone());
    }
}

impl<P, E> EventStream<P, E> {
    pub(crate) fn new(shared: Arc<Mutex<Queue<P, E>>>, subscription: Subscription) -> Self {
        Self {
            shared,
            _subscription: subscription,
        }
    }
}

impl<P, E> Stream for EventStream<P, E> {
    type Item = Result<Event<P, E>, Error>;

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

impl<P, E> fmt::Debug for EventStream<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("EventStream");
        match self.shared.try_lock() {
            Ok(queue) => debug.field("queued", &queue.items.len()),
            Err(_) => debug.field("queued", &format_args!("<locked>")),
        };
        debug.finish_non_exhaustive()
    }
}
