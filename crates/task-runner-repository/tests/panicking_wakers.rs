//! Wakers are the executor's code, and a waker may panic. One that does must not leave the other
//! parties waiting on the same condition asleep, nor skip what follows the wake-up (a signal's
//! callbacks): each test registers a panicking waker first, a well-behaved one after it.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use common::{CountingWaker, Manual};
use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::stream;
use keyrunner_task_runner_repository::{Outcome, Reason, TaskRunnerRepository};

type Repo = TaskRunnerRepository<u32, u32>;

/// A waker whose `wake` panics.
struct PanicsOnWake;

impl Wake for PanicsOnWake {
    fn wake(self: Arc<Self>) {
        panic!("the waker panics");
    }
}

fn panicking_waker() -> Waker {
    Waker::from(Arc::new(PanicsOnWake))
}

/// A task awaits its run's signal (its waker registered before the driver's) and that waker
/// panics when the run is stopped. The stop must still run the signal's callbacks (a linked
/// run's stop, a stream's end) and wake the driver, or the stream is never dropped, the handle
/// never resolves and a shutdown waits forever.
#[test]
fn a_panicking_abort_waker_neither_skips_the_callbacks_nor_strands_the_driver() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let handle = repo.run(1, |_| stream::pending::<u32>()).unwrap();
    let called = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&called);
    handle
        .abort_signal()
        .on_abort(move |_| flag.store(true, Ordering::SeqCst))
        .detach();
    let mut aborted = Box::pin(handle.abort_signal().aborted());
    let waker = panicking_waker();
    assert!(
        aborted
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    manual.drive(&mut pool);

    let stop = panic::catch_unwind(AssertUnwindSafe(|| repo.stop(&1, Reason::from("enough"))));
    assert!(stop.is_err(), "the waker's panic resurfaces from `stop`");
    assert!(repo.state(&1).is_idle(), "the stop happened");
    assert!(
        called.load(Ordering::SeqCst),
        "the abort callback never ran"
    );
    manual.drive(&mut pool);
    assert_eq!(
        handle.outcome(),
        Some(Outcome::Stopped {
            reason: Some(Reason::from("enough"))
        }),
        "the driver was never woken to drop the stream"
    );
    assert_eq!(repo.live_tasks(), 0);
}

/// Two handles await one run; the first one's waker panics when the run ends. The second must
/// still be woken.
#[test]
fn a_panicking_handle_waker_still_lets_the_other_handles_wake() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    let (tx, rx) = mpsc::unbounded::<u32>();
    let mut first = repo.run(1, move |_| rx).unwrap();
    let mut second = first.clone();
    manual.drive(&mut pool);
    let waker = panicking_waker();
    assert!(
        Pin::new(&mut first)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    let (woken, counting) = CountingWaker::new();
    assert!(
        Pin::new(&mut second)
            .poll(&mut Context::from_waker(&counting))
            .is_pending()
    );

    drop(tx);
    let driven = panic::catch_unwind(AssertUnwindSafe(|| manual.drive(&mut pool)));
    assert!(
        driven.is_err(),
        "the waker's panic resurfaces from the executor's poll"
    );
    assert_eq!(woken.count(), 1, "the second handle was never woken");
    assert_eq!(second.outcome(), Some(Outcome::Completed));
    assert_eq!(repo.live_tasks(), 0, "the run is still counted live");
}

/// Two parties await a shutdown; the first one's waker panics when the last stream is dropped.
/// The second must still be woken.
#[test]
fn a_panicking_shutdown_waker_still_lets_the_other_waiters_wake() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    repo.run(1, |_| stream::pending::<u32>()).unwrap().detach();
    manual.drive(&mut pool);
    let mut first = repo.shutdown(None);
    let mut second = repo.shutdown(None);
    let waker = panicking_waker();
    assert!(
        Pin::new(&mut first)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    let (woken, counting) = CountingWaker::new();
    assert!(
        Pin::new(&mut second)
            .poll(&mut Context::from_waker(&counting))
            .is_pending()
    );

    let driven = panic::catch_unwind(AssertUnwindSafe(|| manual.drive(&mut pool)));
    assert!(
        driven.is_err(),
        "the waker's panic resurfaces from the executor's poll"
    );
    assert_eq!(woken.count(), 1, "the second shutdown was never woken");
    assert_eq!(repo.live_tasks(), 0);
}
