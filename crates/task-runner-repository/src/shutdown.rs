//! The live-task count, and [`Shutdown`], which waits for it to reach zero.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering, lock};
use crate::wait::{WaitList, WaitSlot};

/// Counts the runs whose stream may still be alive (started, or still deciding to start), so a
/// shutdown can wait until every stream has been dropped.
#[derive(Debug, Default)]
pub(crate) struct LiveTasks {
    count: AtomicUsize,
    /// Set (for good) by the first [`Shutdown`] that waits: until then the last task to leave
    /// has nobody to wake and takes no lock.
    awaited: AtomicBool,
    /// [`Shutdown`] futures waiting for the count to reach zero.
    quiet: Mutex<WaitList>,
}

/// One live task, counted in [`LiveTasks`] until dropped.
pub(crate) struct Live(Arc<LiveTasks>);

impl LiveTasks {
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The count, read by a read-modify-write: it reads the latest value, and synchronises with
    /// the decrement it reads from (see `Live::drop`).
    fn latest(&self) -> usize {
        self.count.fetch_add(0, Ordering::AcqRel)
    }

    /// Counts one more live task until the returned token is dropped, so a start that unwinds
    /// before its driver exists leaves no count behind.
    pub(crate) fn enter(self: &Arc<Self>) -> Live {
        self.count.fetch_add(1, Ordering::AcqRel);
        Live(Arc::clone(self))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // With `Shutdown::poll`: a waiter raises `awaited`, then reads the count with a
        // read-modify-write; this lowers the count (another), then reads `awaited`. The two
        // read-modify-writes are ordered: if the waiter's comes first, this one reads from it
        // and so sees `awaited`, and takes the lock, which the waiter holds while it registers;
        // if this one comes first, the waiter reads zero. No `SeqCst` needed.
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1
            && self.0.awaited.load(Ordering::Acquire)
        {
            let waiters = lock(&self.0.quiet).take();
            waiters.wake_all();
        }
    }
}

/// Future returned by `shutdown`: resolves once every task stream has been dropped.
///
/// The runs were stopped when `shutdown` was called, whether or not this future is polled.
#[must_use = "the runs are already stopped; await this to wait until their streams are dropped"]
pub struct Shutdown {
    live: Arc<LiveTasks>,
    waiting: Option<WaitSlot>,
}

impl Shutdown {
    pub(crate) fn new(live: Arc<LiveTasks>) -> Self {
        Self {
            live,
            waiting: None,
        }
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.live.get() != 0 {
            let mut quiet = lock(&this.live.quiet);
            this.live.awaited.store(true, Ordering::Release);
            // Looked at again after raising `awaited` and under the lock, which the last task's
            // exit takes after its decrement: either it finds this waker or this sees zero.
            if this.live.latest() != 0 {
                let replaced = quiet.register(&mut this.waiting, cx.waker());
                drop(quiet);
                drop(replaced);
                return Poll::Pending;
            }
        }
        this.waiting = None;
        Poll::Ready(())
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        if let Some(slot) = self.waiting.take() {
            let removed = lock(&self.live.quiet).remove(slot);
            drop(removed);
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("live_tasks", &self.live.get())
            .finish_non_exhaustive()
    }
}
