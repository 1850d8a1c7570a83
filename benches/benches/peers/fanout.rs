//! Fan-out peers: what a user would write instead of a `Subject`.
//!
//! Each peer delivers one value to every listener, and every listener runs the same body, so
//! the measurements differ only in the delivery mechanism.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use slab::Slab;
use tokio::sync::{broadcast, watch};

/// A single-threaded listener.
type LocalListener<T> = Box<dyn Fn(&T)>;

/// A listener shared by the thread-safe peers.
type SharedListener<T> = Arc<dyn Fn(&T) + Send + Sync>;

/// The floor: a plain vector of boxed closures called in a loop. Single-threaded, no removal,
/// no last value.
pub(crate) struct VecLoop<T> {
    listeners: Vec<LocalListener<T>>,
}

impl<T> VecLoop<T> {
    pub(crate) fn new() -> Self {
        Self {
            listeners: Vec::new(),
        }
    }

    pub(crate) fn listen(&mut self, listener: impl Fn(&T) + 'static) {
        self.listeners.push(Box::new(listener));
    }

    pub(crate) fn next(&self, value: T) {
        for listener in &self.listeners {
            listener(&value);
        }
    }
}

/// `tokio::sync::broadcast`: `send`, then every receiver `try_recv`s and runs its listener.
pub(crate) struct Broadcast<T> {
    sender: broadcast::Sender<T>,
    receivers: Vec<(broadcast::Receiver<T>, LocalListener<T>)>,
}

impl<T: Clone> Broadcast<T> {
    pub(crate) fn new() -> Self {
        let (sender, _) = broadcast::channel(16);
        Self {
            sender,
            receivers: Vec::new(),
        }
    }

    pub(crate) fn listen(&mut self, listener: impl Fn(&T) + 'static) {
        self.receivers
            .push((self.sender.subscribe(), Box::new(listener)));
    }

    pub(crate) fn next(&mut self, value: T) {
        // An error means "no receiver": nothing to deliver.
        let _ = self.sender.send(value);
        for (receiver, listener) in &mut self.receivers {
            if let Ok(value) = receiver.try_recv() {
                listener(&value);
            }
        }
    }
}

/// `tokio::sync::watch`: `send_replace`, then every receiver that sees a change borrows the
/// value and runs its listener.
pub(crate) struct Watch<T> {
    sender: watch::Sender<T>,
    receivers: Vec<(watch::Receiver<T>, LocalListener<T>)>,
}

impl<T> Watch<T> {
    pub(crate) fn new(initial: T) -> Self {
        let (sender, _) = watch::channel(initial);
        Self {
            sender,
            receivers: Vec::new(),
        }
    }

    pub(crate) fn listen(&mut self, listener: impl Fn(&T) + 'static) {
        let mut receiver = self.sender.subscribe();
        receiver.mark_unchanged();
        self.receivers.push((receiver, Box::new(listener)));
    }

    pub(crate) fn next(&mut self, value: T) {
        self.sender.send_replace(value);
        for (receiver, listener) in &mut self.receivers {
            if receiver.has_changed().unwrap_or(false) {
                listener(&receiver.borrow_and_update());
            }
        }
    }
}

/// The naive thread-safe hand-roll: listeners in a `Mutex<Slab>`, snapshotted under the lock and
/// called outside it (so a listener may publish or unsubscribe), plus the last value.
pub(crate) struct MutexSlab<T> {
    inner: Arc<Mutex<SlabState<T>>>,
}

struct SlabState<T> {
    last: Option<Arc<T>>,
    listeners: Slab<SharedListener<T>>,
}

/// Removes its listener when dropped.
pub(crate) struct SlabSubscription<T> {
    inner: Arc<Mutex<SlabState<T>>>,
    key: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> MutexSlab<T> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(SlabState {
                last: None,
                listeners: Slab::new(),
            })),
        }
    }

    pub(crate) fn listen(
        &self,
        listener: impl Fn(&T) + Send + Sync + 'static,
    ) -> SlabSubscription<T> {
        let key = lock(&self.inner).listeners.insert(Arc::new(listener));
        SlabSubscription {
            inner: Arc::clone(&self.inner),
            key,
        }
    }

    pub(crate) fn next(&self, value: T) {
        let value = Arc::new(value);
        let snapshot: Vec<SharedListener<T>> = {
            let mut state = lock(&self.inner);
            state.last = Some(Arc::clone(&value));
            state.listeners.iter().map(|(_, f)| Arc::clone(f)).collect()
        };
        for listener in &snapshot {
            listener(&value);
        }
    }
}

impl<T> Drop for SlabSubscription<T> {
    fn drop(&mut self) {
        let removed = lock(&self.inner).listeners.try_remove(self.key);
        drop(removed);
    }
}
