//! [`WaitList`]: the one way anything in this crate waits.
//!
//! Every wait — a run handle for its run's end, a driver for its run's abort, a
//! [`WaitForAbort`](crate::WaitForAbort), a [`Shutdown`](crate::Shutdown), an
//! [`EventStream`](crate::EventStream) — keeps its waker in a `WaitList` that sits inside the
//! mutex of the state it waits on. A waiter checks its condition and registers under that lock;
//! whoever makes the condition true takes the list under the same lock and wakes it after
//! releasing it. So no wake-up is lost, and no waker runs under a lock.
//!
//! A waker is the executor's code, and may panic: every other waker of the list is still woken,
//! and the first panic resumes afterwards, so one broken waker never leaves the other waiters
//! asleep.

use std::mem;
use std::task::Waker;

use slab::Slab;

use crate::panics::Deferred;

/// The wakers of the parties waiting on one condition, one slot per waiter, re-armed in place:
/// the first waiter costs no allocation, more share a slab (boxed, since most lists hold one
/// waker or none).
#[derive(Debug, Default)]
pub(crate) struct WaitList {
    first: Option<Waker>,
    more: Option<Box<Slab<Waker>>>,
    /// Bumped by [`take`](Self::take): a slot handed out before belongs to the taken list.
    epoch: u32,
}

/// Which [`WaitList`] slot a waiter holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitSlot {
    epoch: u32,
    index: Option<usize>,
}

impl WaitList {
    /// Stores `waker` in the waiter's slot, taking a free slot if it has none (or a stale one).
    /// Returns the waker it replaced, to be dropped once the lock is released.
    pub(crate) fn register(&mut self, slot: &mut Option<WaitSlot>, waker: &Waker) -> Option<Waker> {
        let known = match *slot {
            Some(WaitSlot { epoch, index }) if epoch == self.epoch => match index {
                None => self.first.as_mut(),
                Some(index) => self.more.as_mut().and_then(|more| more.get_mut(index)),
            },
            _ => None,
        };
        if let Some(known) = known {
            if known.will_wake(waker) {
                return None;
            }
            return Some(mem::replace(known, waker.clone()));
        }
        let index = if self.first.is_none() {
            self.first = Some(waker.clone());
            None
        } else {
            let more = self.more.get_or_insert_default();
            Some(more.insert(waker.clone()))
        };
        *slot = Some(WaitSlot {
            epoch: self.epoch,
            index,
        });
        None
    }

    /// Frees the waiter's slot; returns its waker, to be dropped once the lock is released.
    /// A slot of a list taken since is left alone (it may belong to another waiter now).
    pub(crate) fn remove(&mut self, slot: WaitSlot) -> Option<Waker> {
        if slot.epoch != self.epoch {
            return None;
        }
        match slot.index {
            None => self.first.take(),
            Some(index) => self.more.as_mut()?.try_remove(index),
        }
    }

    /// Returns the spare capacity left by waiters that came and went to the allocator; every
    /// waiter keeps its slot.
    pub(crate) fn shrink_to_fit(&mut self) {
        if let Some(more) = &mut self.more {
            more.shrink_to_fit();
        }
    }

    /// Takes every waker out, to be woken once the lock is released.
    pub(crate) fn take(&mut self) -> Self {
        let epoch = self.epoch;
        self.epoch = epoch.wrapping_add(1);
        Self {
            first: self.first.take(),
            more: self.more.take(),
            epoch,
        }
    }

    /// Wakes every waker (call with no lock held). Should a waker panic, the others are still
    /// woken; then the first panic resumes (or is dropped, if this thread is already unwinding).
    pub(crate) fn wake_all(self) {
        let mut panic = Deferred::default();
        // Most lists hold one waker or none: no chained iterator over an absent slab.
        if self.more.is_none() {
            if let Some(waker) = self.first {
                panic.catch(|| waker.wake());
                panic.resume();
            }
            return;
        }
        let more = self.more.into_iter().flat_map(|more| more.into_iter());
        for waker in self.first.into_iter().chain(more.map(|(_, waker)| waker)) {
            panic.catch(|| waker.wake());
        }
        panic.resume();
    }
}
