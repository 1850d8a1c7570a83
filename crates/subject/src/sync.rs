//! The synchronization primitives the subject is built from: `std` normally, `loom` under
//! `cfg(loom)` so the model checker can explore every interleaving.
//!
//! `Arc` and `Weak` always come from `std`: a [`Subscription`](crate::Subscription) needs a
//! `Weak`, and reference counting is not part of the protocol being checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::ThreadId;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

use std::cell::Cell;
use std::sync::{PoisonError, TryLockError};

/// Identifies a live thread: the address of a thread-local, which is cheaper to get than
/// `std::thread::current().id()` (no handle to clone). Two live threads never share it; it is
/// only compared while the thread holding the delivery role is alive.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadId(std::num::NonZeroUsize);

// Per thread: how many callbacks (deliveries, or a layer's initializers) it is inside. Its
// address identifies the thread.
#[cfg(not(loom))]
thread_local!(static CALLBACKS: Cell<u32> = const { Cell::new(0) });
#[cfg(loom)]
loom::thread_local!(static CALLBACKS: Cell<u32> = Cell::new(0));

/// The id of the calling thread.
#[cfg(not(loom))]
#[inline]
pub(crate) fn current_thread() -> ThreadId {
    // Non-zero (so `Option<ThreadId>` is one word): the address of a live thread-local.
    CALLBACKS.with(|depth| {
        let address = std::ptr::from_ref(depth).addr();
        ThreadId(std::num::NonZeroUsize::new(address).unwrap_or(std::num::NonZeroUsize::MIN))
    })
}

/// The id of the calling thread.
#[cfg(loom)]
pub(crate) fn current_thread() -> ThreadId {
    loom::thread::current().id()
}

/// Marks the calling thread as running a callback that other threads may wait for (a delivery,
/// or an initializer of a layer above) until dropped.
pub(crate) struct InCallback(());

impl InCallback {
    #[inline]
    pub(crate) fn enter() -> Self {
        CALLBACKS.with(|depth| depth.set(depth.get() + 1));
        Self(())
    }
}

impl Drop for InCallback {
    #[inline]
    fn drop(&mut self) {
        CALLBACKS.with(|depth| depth.set(depth.get() - 1));
    }
}

/// Whether the calling thread is inside an [`InCallback`] scope.
#[inline]
pub(crate) fn in_callback() -> bool {
    CALLBACKS.with(|depth| depth.get() > 0)
}

/// Locks `mutex`, ignoring poison: no critical section calls user code except
/// [`Subject::update`](crate::Subject::update)'s closure, which only reads, so a poisoned lock
/// always holds consistent data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The contents of a mutex the caller holds exclusively, ignoring poison (see [`lock`]).
pub(crate) fn get_mut<T>(mutex: &mut Mutex<T>) -> &mut T {
    mutex.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `mutex` if it is free right now, ignoring poison; `None` when someone holds it.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Waits on `condvar`, ignoring poison (see [`lock`]).
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}
