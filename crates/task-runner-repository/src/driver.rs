//! [`Driving`]: the future a spawner runs for one run.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;

use crate::abort::AbortCallback;
use crate::item::sealed::Sealed;
use crate::panics::{Deferred, panicked};
use crate::run::{Published, RunCore, RunOps};
use crate::shutdown::Live;
use crate::state::Outcome;
use crate::task::TaskContext;
use crate::trace::RunSpan;
use crate::wait::WaitSlot;

/// Items a driver takes from an always-ready stream before it yields to its executor.
const YIELD_BUDGET: u32 = 64;

pin_project! {
    /// Polls the task's stream, publishes its items, records how the run ended, and drops the
    /// stream as soon as the run is stopped.
    pub(crate) struct Driving<K, P, E, F, St, M> {
        #[pin]
        stream: Option<St>,
        task: Option<F>,
        run: Option<Arc<dyn RunOps<K, P, E>>>,
        core: Arc<RunCore<P, E>>,
        live: Option<Live>,
        link: Option<AbortCallback>,
        // The driver's place among the run's signal's waiters.
        waiting: Option<WaitSlot>,
        // A listener's panic during one of this run's transitions, resumed once the run is done.
        panic: Deferred,
        // The run's span (zero-sized without the `tracing` feature).
        span: RunSpan<E>,
        started: bool,
        concluded: bool,
        marker: PhantomData<fn() -> M>,
    }

    impl<K, P, E, F, St, M> PinnedDrop for Driving<K, P, E, F, St, M> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(run) = this.run.take() else {
                return;
            };
            let mut by_itself = false;
            if !*this.concluded {
                // The executor dropped the run before it ended.
                if !*this.started {
                    this.core.refuse();
                }
                // Stale-safe: does nothing if the run no longer owns the key.
                by_itself = run.conclude(&Outcome::Lost, this.panic);
            }
            let _entered = this.span.enter();
            let parts = (this.stream, this.task, this.link, this.live);
            finish(parts, run, this.core, this.span, by_itself, this.panic);
            this.panic.resume();
        }
    }
}

/// What [`finish`] drops: the stream, the task, the link and the live count.
type Parts<'a, St, F> = (
    Pin<&'a mut Option<St>>,
    &'a mut Option<F>,
    &'a mut Option<AbortCallback>,
    &'a mut Option<Live>,
);

/// Drops the stream (on the executor, where it was polled), records the run's end in its span,
/// lets go of the key, tells the handles, then leaves the live count. `by_itself`: the driver
/// recorded the run's end (it was not stopped), so its signal can never fire. A handle's waker
/// that panics is caught into `panic`: the live count is left all the same.
fn finish<K, P, E, F, St>(
    (mut stream, task, link, live): Parts<'_, St, F>,
    run: Arc<dyn RunOps<K, P, E>>,
    core: &RunCore<P, E>,
    span: &RunSpan<E>,
    by_itself: bool,
    panic: &mut Deferred,
) {
    // A panicking destructor must not keep the handles waiting forever.
    let _ = panic::catch_unwind(AssertUnwindSafe(|| drop(task.take())));
    let _ = panic::catch_unwind(AssertUnwindSafe(|| stream.set(None)));
    // Before the handles resolve: whoever awaits one finds the run's end recorded. A
    // subscriber's panic is the subscriber's; it must not keep the handles waiting either.
    let _ = panic::catch_unwind(AssertUnwindSafe(|| span.ended(core)));
    drop(link.take());
    // The driver's lease first, then the handles, then the live count: once a handle resolves
    // the driver holds no key, and once a shutdown resolves every handle has resolved too.
    drop(run);
    panic.catch(|| core.finish(by_itself));
    drop(live.take());
}

impl<K, P, E, F, St, M> Driving<K, P, E, F, St, M> {
    pub(crate) fn new(
        run: Arc<dyn RunOps<K, P, E>>,
        core: Arc<RunCore<P, E>>,
        task: F,
        live: Live,
        link: Option<AbortCallback>,
        span: RunSpan<E>,
    ) -> Self {
        Self {
            stream: None,
            task: Some(task),
            run: Some(run),
            core,
            live: Some(live),
            link,
            waiting: None,
            panic: Deferred::default(),
            span,
            started: false,
            concluded: false,
            marker: PhantomData,
        }
    }
}

impl<K, P, E, F, St, M> Future for Driving<K, P, E, F, St, M>
where
    F: FnOnce(TaskContext<K>) -> St,
    St: Stream,
    St::Item: Sealed<P, E, M>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // What the task logs while it is polled belongs to its run.
        let _entered = this.span.enter();
        *this.started = true;
        let Some(run) = this.run.as_ref() else {
            return Poll::Ready(());
        };
        let mut budget = YIELD_BUDGET;
        // A stop is seen by the flag; the waker is registered only before the driver waits, so
        // a stream that never waits costs no registration.
        let mut aborted = this.core.signal_core().is_aborted();
        let outcome = loop {
            // A stopper records the outcome before it fires the signal: nothing to record here.
            if aborted {
                break None;
            }
            if let Some(task) = this.task.take() {
                // The context clones the key: user code, which may panic like the task.
                match panic::catch_unwind(AssertUnwindSafe(|| task(run.context()))) {
                    Ok(stream) => this.stream.set(Some(stream)),
                    Err(payload) => break Some(panicked(payload)),
                }
            }
            let Some(stream) = this.stream.as_mut().as_pin_mut() else {
                // Unreachable: the stream is set right above and only cleared in `finish`.
                break Some(Outcome::Lost);
            };
            match panic::catch_unwind(AssertUnwindSafe(|| stream.poll_next(cx))) {
                Ok(Poll::Pending) => {
                    // Registered, then the flag is looked at again under the lock a stop takes
                    // to fire: either the stop wakes this waker, or this sees the stop.
                    if this.core.register_driver(this.waiting, cx.waker()) {
                        aborted = true;
                        continue;
                    }
                    return Poll::Pending;
                }
                Ok(Poll::Ready(Some(item))) => match item.into_update() {
                    Ok(update) => {
                        // A listener's panic means the item was published: keep driving.
                        match this.panic.catch(|| run.publish(update)) {
                            Some(Ok(Published::Yes)) | None => this.span.progress(this.core),
                            // Stopped or superseded: the item is discarded.
                            Some(Ok(Published::Stale)) => break None,
                            // Being stopped: the item is discarded, and the stopper records the
                            // outcome, then fires the signal, which wakes this driver (its waker
                            // is registered) to drop the stream.
                            Some(Ok(Published::Closing)) => {
                                if this.core.register_driver(this.waiting, cx.waker()) {
                                    aborted = true;
                                    continue;
                                }
                                return Poll::Pending;
                            }
                            // The progress type's own code panicked.
                            Some(Err(payload)) => break Some(panicked(payload)),
                        }
                        budget -= 1;
                        if budget == 0 {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        aborted = this.core.signal_core().is_aborted();
                    }
                    Err(error) => {
                        break Some(Outcome::Failed {
                            error: Arc::new(error),
                        });
                    }
                },
                Ok(Poll::Ready(None)) => break Some(Outcome::Completed),
                Err(payload) => break Some(panicked(payload)),
            }
        };
        let mut by_itself = false;
        if let Some(outcome) = outcome {
            // Stale-safe: a stop that won the race has recorded its own outcome.
            by_itself = run.conclude(&outcome, this.panic);
            // Dropped here, not inside the transition: a discarded error's destructor is user
            // code.
            drop(outcome);
        }
        *this.concluded = true;
        if let Some(run) = this.run.take() {
            let parts = (this.stream, this.task, this.link, this.live);
            finish(parts, run, this.core, this.span, by_itself, this.panic);
        }
        // The run is over and its stream dropped: a listener's panic surfaces here, to the
        // executor, without having cut the run short.
        this.panic.resume();
        Poll::Ready(())
    }
}
