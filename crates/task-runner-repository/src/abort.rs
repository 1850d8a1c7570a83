//! [`AbortController`] and [`AbortSignal`]: "you are asked to stop", fired at most once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::panics::Deferred;
use crate::state::Reason;
use crate::sync::{AtomicU8, Mutex, Ordering, lock, thread_local};
use crate::wait::{WaitList, WaitSlot};

type Callback = Box<dyn FnOnce(Option<&Reason>) + Send>;

/// [`SignalCore::flags`]: the signal fired (its reason is written).
const FIRED: u8 = 1;
/// The signal can no longer fire (its run ended without being stopped): callbacks and waiters
/// are dropped, and later ones are dropped at once.
const CLOSED: u8 = 2;
/// Someone registered a callback or a waiter: closing must take the lock to drop them.
const LISTENED: u8 = 4;

/// The state of one signal. A standalone controller owns one in an `Arc`; a run's signal lives
/// inside the run's record (see [`SignalHost`]), which saves an allocation per run.
#[derive(Default)]
pub(crate) struct SignalCore {
    /// `FIRED`, `CLOSED`, `LISTENED`. Each is set once by a read-modify-write, so they are
    /// totally ordered: a registration (which sets `LISTENED` under the lock) either sees
    /// `CLOSED` and keeps nothing, or is seen by `close`, which then takes the lock.
    flags: AtomicU8,
    state: Mutex<SignalState>,
}

#[derive(Default)]
struct SignalState {
    fired: bool,
    reason: Option<Reason>,
    /// Boxed on the first callback: every run has a signal, few register callbacks.
    callbacks: Option<Box<Slab<Callback>>>,
    /// Tasks waiting for the signal: [`WaitForAbort`] futures and the run's driver.
    waiters: WaitList,
}

/// Whatever holds a [`SignalCore`]: a controller's own allocation, or a run's record.
pub(crate) trait SignalHost: Send + Sync + 'static {
    fn signal_core(&self) -> &SignalCore;
}

impl SignalHost for SignalCore {
    fn signal_core(&self) -> &SignalCore {
        self
    }
}

impl SignalCore {
    /// Whether the signal has fired.
    pub(crate) fn is_aborted(&self) -> bool {
        self.flags.load(Ordering::Acquire) & FIRED != 0
    }

    /// Fires the signal: wakes its waiters, then runs its callbacks (see [`run_callbacks`]), the
    /// callbacks even if a waker panics. Returns whether this call fired it.
    pub(crate) fn fire(&self, reason: Option<Reason>) -> bool {
        let (callbacks, waiters) = {
            let mut state = lock(&self.state);
            if state.fired {
                return false;
            }
            state.fired = true;
            state.reason = reason.clone();
            // After the reason: a reader that sees the flag sees the reason.
            self.flags.fetch_or(FIRED, Ordering::AcqRel);
            (state.callbacks.take(), state.waiters.take())
        };
        // A waker that panics must not keep the callbacks from running (a linked run's stop, a
        // stream's end): both happen, then the first panic resumes.
        let mut panic = Deferred::default();
        panic.catch(|| waiters.wake_all());
        if let Some(callbacks) = callbacks {
            panic.catch(|| run_callbacks(*callbacks, reason));
        }
        panic.resume();
        true
    }

    /// Declares that the signal will never fire (its run ended by itself): drops the callbacks
    /// registered so far, outside the lock, and every later one at once.
    ///
    /// Its waiters' wakers are dropped too: they wait for nothing that can happen.
    pub(crate) fn close(&self) {
        if self.flags.fetch_or(CLOSED, Ordering::AcqRel) & LISTENED == 0 {
            // Nothing was ever registered, and nothing will be kept from now on.
            return;
        }
        let (callbacks, waiters) = {
            let mut state = lock(&self.state);
            if state.fired {
                return;
            }
            (state.callbacks.take(), state.waiters.take())
        };
        // A callback's captures may do anything on drop, panic included: that must not stop the
        // run from finishing.
        let mut panic = Deferred::default();
        panic.catch(|| drop((callbacks, waiters)));
        panic.discard();
    }

    /// Registers `waker` to be woken when the signal fires; returns whether it has fired
    /// already (then nothing is registered).
    pub(crate) fn register(&self, slot: &mut Option<WaitSlot>, waker: &Waker) -> bool {
        let mut state = lock(&self.state);
        if state.fired {
            return true;
        }
        if self.listen() & CLOSED != 0 {
            // It will never fire: nothing to wake.
            return false;
        }
        let replaced = state.waiters.register(slot, waker);
        drop(state);
        drop(replaced);
        false
    }

    /// Returns the spare capacity of the callbacks' and waiters' lists (left by callbacks and
    /// waiters that came and went) to the allocator. Nothing of the user's runs: callbacks and
    /// wakers are only moved.
    fn shrink_to_fit(&self) {
        let mut state = lock(&self.state);
        if let Some(callbacks) = state.callbacks.as_mut() {
            callbacks.shrink_to_fit();
        }
        state.waiters.shrink_to_fit();
    }

    /// Frees a waiter's slot.
    pub(crate) fn unregister(&self, slot: WaitSlot) {
        let removed = lock(&self.state).waiters.remove(slot);
        drop(removed);
    }

    /// Marks the signal listened to (call under the lock); returns the flags before.
    fn listen(&self) -> u8 {
        self.flags.fetch_or(LISTENED, Ordering::AcqRel)
    }

    fn reason(&self) -> Option<Reason> {
        if !self.is_aborted() {
            return None;
        }
        lock(&self.state).reason.clone()
    }
}

/// The side that fires an [`AbortSignal`].
///
/// Every run gets a signal of its own, fired by the repository when the run is stopped,
/// replaced or shut down. A controller of your own can be linked to runs with
/// [`IdleNode::run_linked`](crate::IdleNode::run_linked), so one `abort` stops them all.
///
/// ```
/// use keyrunner_task_runner_repository::{AbortController, Reason};
///
/// let controller = AbortController::new();
/// let signal = controller.signal();
/// assert!(!signal.is_aborted());
///
/// assert!(controller.abort(Some(Reason::from("deadline"))));
/// assert!(!controller.abort(None), "a signal fires once");
/// assert_eq!(signal.reason().as_ref().map(Reason::as_str), Some("deadline"));
/// ```
#[derive(Clone)]
pub struct AbortController {
    signal: AbortSignal,
}

/// The side a task watches: cheap to clone, fired at most once.
///
/// Query it ([`is_aborted`](Self::is_aborted), [`reason`](Self::reason)), await it
/// ([`aborted`](Self::aborted)), or register a callback ([`on_abort`](Self::on_abort)); a callback
/// registered after the signal fired runs at once.
///
/// A run's signal fires when the run is *asked* to stop — by `stop`, a replacement, a shutdown or
/// a linked controller — never because the run ended by itself. Once a run has ended without
/// being stopped, its signal never fires: the callbacks it held are dropped, and a callback
/// registered later is dropped at once.
///
/// ```
/// # futures::executor::block_on(async {
/// use keyrunner_task_runner_repository::AbortController;
///
/// let controller = AbortController::new();
/// let signal = controller.signal();
/// let waiter = signal.aborted();
/// controller.abort(None);
/// waiter.await;
/// assert!(signal.is_aborted());
/// # });
/// ```
#[derive(Clone)]
pub struct AbortSignal {
    host: Arc<dyn SignalHost>,
}

impl AbortController {
    /// A controller whose signal has not fired.
    #[must_use]
    pub fn new() -> Self {
        Self {
            signal: AbortSignal {
                host: Arc::new(SignalCore::default()),
            },
        }
    }

    /// The signal this controller fires.
    #[must_use]
    pub fn signal(&self) -> AbortSignal {
        self.signal.clone()
    }

    /// Fires the signal with `reason`; returns `true` if this call fired it, `false` if it had
    /// fired already (the first reason stays).
    ///
    /// Tasks awaiting the signal are woken, then callbacks run on this thread, after the signal
    /// is marked aborted and no lock is held. If a waker or a callback panics, the other wakers
    /// are still woken and the other callbacks still run, and the first panic is resumed from
    /// this call.
    ///
    /// Called from inside an abort callback (one signal firing another, as linked runs do), this
    /// marks the signal aborted and returns at once; its callbacks run after the current one,
    /// from the outermost `abort`, so a chain of any length never deepens the stack.
    pub fn abort(&self, reason: Option<Reason>) -> bool {
        self.signal.core().fire(reason)
    }

    /// Whether the signal has fired.
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        self.signal.is_aborted()
    }

    /// Returns the spare capacity of the signal's callbacks and waiters to the allocator.
    pub(crate) fn shrink_to_fit(&self) {
        self.signal.core().shrink_to_fit();
    }
}

impl Default for AbortController {
    fn default() -> Self {
        Self::new()
    }
}

impl AbortSignal {
    /// The signal held by `host`.
    pub(crate) fn of(host: Arc<dyn SignalHost>) -> Self {
        Self { host }
    }

    fn core(&self) -> &SignalCore {
        self.host.signal_core()
    }

    /// Whether the signal has fired.
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        self.core().is_aborted()
    }

    /// The reason the signal fired with, if it fired with one.
    #[must_use]
    pub fn reason(&self) -> Option<Reason> {
        self.core().reason()
    }

    /// A future that resolves once the signal has fired (at once if it already has).
    pub fn aborted(&self) -> WaitForAbort {
        WaitForAbort {
            signal: self.clone(),
            slot: None,
        }
    }

    /// Runs `callback` with the reason when the signal fires; at once, on this thread, if it has
    /// fired already. If the signal can no longer fire (its run ended by itself), `callback` is
    /// dropped unused.
    ///
    /// Dropping the returned guard removes a callback that has not run yet;
    /// [`AbortCallback::detach`] keeps it for as long as the signal can fire.
    pub fn on_abort<F>(&self, callback: F) -> AbortCallback
    where
        F: FnOnce(Option<&Reason>) + Send + 'static,
    {
        let core = self.core();
        let mut state = lock(&core.state);
        if state.fired {
            let reason = state.reason.clone();
            drop(state);
            callback(reason.as_ref());
            return AbortCallback::inert();
        }
        if core.listen() & CLOSED != 0 {
            // It will never fire: keeping the callback would only keep its captures alive.
            drop(state);
            drop(callback);
            return AbortCallback::inert();
        }
        let slot = state
            .callbacks
            .get_or_insert_default()
            .insert(Box::new(callback));
        AbortCallback {
            signal: Some(self.clone()),
            slot,
        }
    }

    /// Whether `self` and `other` are the same signal.
    #[must_use]
    pub fn same_signal(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.host), Arc::as_ptr(&other.host))
    }
}

/// The callbacks of one fired signal, with its reason.
type Batch = (Slab<Callback>, Option<Reason>);

thread_local! {
    /// The batches waiting on this thread while it runs abort callbacks: a callback that fires
    /// another signal (a linked run's stop fires that run's signal, whose callback stops the
    /// next linked run, and so on) queues that signal's callbacks here instead of running them
    /// on top of its own stack frame. `None` while this thread runs no callbacks.
    #[allow(
        clippy::missing_const_for_thread_local,
        reason = "loom's `thread_local!` has no `const` form"
    )]
    static PENDING: RefCell<Option<VecDeque<Batch>>> = RefCell::new(None);
}

/// Runs `callbacks` with `reason`, then every batch they queued, breadth-first; or, when this
/// thread is already running callbacks, queues them for that outer call. However long a chain
/// of signals firing each other, the stack holds one callback frame at a time.
///
/// A signal may also fire while this thread's thread-locals are being destroyed (a repository
/// handle or a controller dropped by another thread-local's destructor), when the queue may be
/// gone already: then the callbacks run here, and nested ones depth-first, rather than not at
/// all (or a panic in a thread-local's destructor, which aborts the process).
///
/// A panicking callback does not stop the others; the first panic resumes from the outermost
/// call once every queued callback has run.
fn run_callbacks(callbacks: Slab<Callback>, reason: Option<Reason>) {
    /// Clears this thread's queue even if something below unwinds.
    struct Outermost;
    impl Drop for Outermost {
        fn drop(&mut self) {
            let _ = PENDING.try_with(|pending| pending.borrow_mut().take());
        }
    }

    let mut batch = Some((callbacks, reason));
    let queued = PENDING.try_with(|pending| {
        let mut pending = pending.borrow_mut();
        match pending.as_mut() {
            Some(queue) => {
                queue.extend(batch.take());
                true
            }
            None => {
                *pending = Some(VecDeque::new());
                false
            }
        }
    });
    if matches!(queued, Ok(true)) {
        return;
    }
    let outermost = Outermost;
    let mut panic = Deferred::default();
    while let Some((callbacks, reason)) = batch.take().or_else(|| {
        PENDING
            .try_with(|pending| pending.borrow_mut().as_mut().and_then(VecDeque::pop_front))
            .ok()
            .flatten()
    }) {
        for (_, callback) in callbacks {
            panic.catch(|| callback(reason.as_ref()));
        }
    }
    drop(outermost);
    panic.resume();
}

impl fmt::Debug for AbortSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.core();
        let mut d = f.debug_struct("AbortSignal");
        d.field("aborted", &core.is_aborted());
        match core.state.try_lock() {
            Ok(state) => d.field("reason", &state.reason),
            Err(_) => d.field("reason", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

impl fmt::Debug for AbortController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortController")
            .field("signal", &self.signal)
            .finish()
    }
}

/// Future returned by [`AbortSignal::aborted`]: resolves once the signal has fired.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WaitForAbort {
    signal: AbortSignal,
    slot: Option<WaitSlot>,
}

impl Future for WaitForAbort {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let core = this.signal.core();
        if core.is_aborted() || core.register(&mut this.slot, cx.waker()) {
            // `fire` took the waiters: the slot is gone.
            this.slot = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for WaitForAbort {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.signal.core().unregister(slot);
        }
    }
}

impl fmt::Debug for WaitForAbort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForAbort")
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

/// Guard of a callback registered with [`AbortSignal::on_abort`].
///
/// Dropping it removes the callback if it has not run yet.
#[must_use = "dropping the guard removes the callback; call `.detach()` to keep it"]
pub struct AbortCallback {
    signal: Option<AbortSignal>,
    slot: usize,
}

impl AbortCallback {
    /// A guard with nothing to remove.
    fn inert() -> Self {
        Self {
            signal: None,
            slot: 0,
        }
    }

    /// Keeps the callback registered for as long as the signal can fire.
    pub fn detach(mut self) {
        self.signal = None;
    }
}

impl Drop for AbortCallback {
    fn drop(&mut self) {
        if let Some(signal) = self.signal.take() {
            let removed = {
                let mut state = lock(&signal.core().state);
                // After `fire` or `close` the slab was taken, and a fired or closed signal takes
                // no new callbacks, so the slot cannot belong to another callback.
                state
                    .callbacks
                    .as_mut()
                    .and_then(|callbacks| callbacks.try_remove(self.slot))
            };
            // Dropped outside the lock: the callback's captures may do anything on drop.
            drop(removed);
        }
    }
}

impl fmt::Debug for AbortCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortCallback")
            .field("registered", &self.signal.is_some())
            .finish()
    }
}
