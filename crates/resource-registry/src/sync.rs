//! The synchronization primitives the registry is built from: `std` normally, `loom` under
//! `cfg(loom)` so the model checker can explore every interleaving.
//!
//! `Arc` always comes from `std`: methods take `self: &Arc<Self>`, which loom's `Arc` does not
//! allow, and reference counting is not part of the protocol being checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

pub(crate) use std::sync::Arc;
use std::sync::{PoisonError, TryLockError};

/// Locks `mutex`, ignoring poison: no critical section calls user code except a key's `Eq`,
/// and the map is consistent whenever one runs, so a poisoned lock holds valid data.
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

/// Identifies a live thread: the address of a thread-local, which is cheaper to get than
/// `std::thread::current().id()` (no handle to clone). Two live threads never share it; it is
/// only compared while the thread it names runs an initializer, so it is alive.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadId(usize);

/// The id of the calling thread.
#[cfg(not(loom))]
pub(crate) fn current_thread() -> ThreadId {
    thread_local!(static MARK: u8 = const { 0 });
    MARK.with(|mark| ThreadId(std::ptr::from_ref(mark).addr()))
}

#[cfg(loom)]
pub(crate) use loom::thread::ThreadId;

/// The id of the calling thread.
#[cfg(loom)]
pub(crate) fn current_thread() -> ThreadId {
    loom::thread::current().id()
}
