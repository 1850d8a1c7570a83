//! Test support: a hand-cranked executor and streams that report their own drop.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use keyrunner_task_runner_repository::{BoxFuture, TaskRunnerRepository};

/// A spawner that queues runs until the test cranks them with [`Manual::drive`], so every
/// interleaving in a test is chosen by the test, not by a scheduler.
#[derive(Clone, Default)]
pub struct Manual {
    queue: Arc<Mutex<Vec<BoxFuture>>>,
}

impl Manual {
    pub fn repository<K, S, E>(&self) -> TaskRunnerRepository<K, S, E>
    where
        K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
        S: Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let queue = Arc::clone(&self.queue);
        TaskRunnerRepository::new(move |future: BoxFuture| queue.lock().unwrap().push(future))
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

/// Records every state a listener sees.
pub fn recorder<T: Clone + Send + 'static>() -> (Arc<Mutex<Vec<T>>>, impl Fn(&T) + Send + Sync) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |value: &T| {
        sink.lock().unwrap().push(value.clone())
    })
}
