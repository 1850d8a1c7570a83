//! The synchronization primitives the subject is built from: `std` normally, `loom` under
//! `cfg(loom)` so the model checker can explore every interleaving.
//!
//! `Arc` and `Weak` always come from `std`: a [`Subscription`](crate::Subscription) needs a
//! `Weak`, and reference counting is not part of the protocol being checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::ThreadId;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

use std::sync::{PoisonError, TryLockError};

/// Identifies a live thread: the address of a thread-local, which is cheaper to get than
/// `std::thread::current().id()` (no handle to clone). Two live threads never share it; it is
/// only compared while the thread holding the delivery role is alive.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadId(std::num::NonZeroUsize);

/// The id of the calling thread.
#[cfg(not(loom))]
pub(crate) fn current_thread() -> ThreadId {
    thread_local!(static MARK: u8 = const { 0 });
    // Non-zero (so `Option<ThreadId>` is one word): the address of a live thread-local.
    MARK.with(|mark| {
        let address = std::ptr::from_ref(mark).addr();
        ThreadId(std::num::NonZeroUsize::new(address).unwrap_or(std::num::NonZeroUsize::MIN))
    })
}

/// The id of the calling thread.
#[cfg(loom)]
pub(crate) fn current_thread() -> ThreadId {
    loom::thread::current().id()
}

/// Locks `mutex`, ignoring poison: no critical section calls user code except
/// [`Subject::update`](crate::Subject::update)'s closure, which only reads, so a poisoned lock
/// always holds consistent data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
