//! Test support for the umbrella's suites: a spawner that queues drivers for a hand-cranked
//! pool, a listener adapter, state builders, and a counting waker.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};

use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use keyrunner::{Driver, Event, Outcome, RunId, Spawn, State, spawn_fn};

/// Drivers handed to the spawner, waiting for [`Queue::drive`].
#[derive(Clone, Default)]
pub struct Queue(Arc<Mutex<Vec<Driver>>>);

impl Queue {
    /// A spawner that queues drivers here.
    pub fn spawner(&self) -> impl Spawn + use<> {
        let queue = Arc::clone(&self.0);
        spawn_fn(move |driver| {
            queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(driver);
        })
    }

    /// Hands every queued driver to `pool` and runs it until nothing can make progress.
    pub fn drive(&self, pool: &mut LocalPool) {
        loop {
            let queued =
                std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
            if queued.is_empty() {
                break;
            }
            for driver in queued {
                pool.spawner()
                    .spawn_local(driver)
                    .expect("a local pool accepts tasks while it exists");
            }
            pool.run_until_stalled();
        }
    }
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

/// Idle with `last`, no progress.
pub fn idle<P, E>(last: Option<Outcome<E>>) -> State<P, E> {
    State::Idle {
        last,
        progress: None,
    }
}

/// Idle after a run that ended with `last` and final progress `progress`.
pub fn ended<P, E>(last: Outcome<E>, progress: Option<P>) -> State<P, E> {
    State::Idle {
        last: Some(last),
        progress: progress.map(Arc::new),
    }
}

/// Running `run` with `progress`.
pub fn running<P, E>(run: RunId, progress: Option<P>) -> State<P, E> {
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
}
