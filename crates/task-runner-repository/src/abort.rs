//! [`AbortController`] and [`AbortSignal`]: "you are asked to stop", fired at most once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use event_listener::EventListener;
use slab::Slab;

use crate::notify::Notify;
use crate::panics::Deferred;
use crate::state::Reason;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, lock, thread_local};

type Callback = Box<dyn FnOnce(Option<&Reason>) + Send>;

struct Inner {
    /// Set once, after `reason` is written, so a reader that sees `true` also sees the reason.
    aborted: AtomicBool,
    state: Mutex<SignalState>,
    event: Notify,
}

struct SignalState {
    fired: bool,
    /// Set when the signal can no longer fire (its run ended without being stopped): callbacks
    /// are dropped, and later ones are dropped at once.
    closed: bool,
    reason: Option<Reason>,
    /// Boxed on the first callback: every run has a signal, few register callbacks.
    callbacks: Option<Box<Slab<Callback>>>,
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
#[derive(Clone, Default)]
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
/// a linked controller — never because the run ended by itself.
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
    inner: Arc<Inner>,
}

impl AbortController {
    /// A controller whose signal has not fired.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The signal this controller fires.
    #[must_use]
    pub fn signal(&self) -> AbortSignal {
        self.signal.clone()
    }

    /// Fires the signal with `reason`; returns `true` if this call fired it, `false` if it had
    /// fired already (the first reason stays).
    ///
    /// Callbacks run on this thread, after the signal is marked aborted and no lock is held. If a
    /// callback panics, the others still run and the first panic is resumed from this call.
    ///
    /// Called from inside an abort callback (one signal firing another, as linked runs do), this
    /// marks the signal aborted and returns at once; its callbacks run after the current one,
    /// from the outermost `abort`, so a chain of any length never deepens the stack.
    pub fn abort(&self, reason: Option<Reason>) -> bool {
        self.signal.fire(reason)
    }

    /// Whether the signal has fired.
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        self.signal.is_aborted()
    }

    /// Declares that the signal will never fire; see [`AbortSignal::close`].
    pub(crate) fn close(&self) {
        self.signal.close();
    }
}

impl Default for AbortSignal {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                aborted: AtomicBool::new(false),
                state: Mutex::new(SignalState {
                    fired: false,
                    closed: false,
                    reason: None,
                    callbacks: None,
                }),
                event: Notify::default(),
            }),
        }
    }
}

impl AbortSignal {
    /// Whether the signal has fired.
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        // `SeqCst`: the re-check after listening (see `Notify`).
        self.inner.aborted.load(Ordering::SeqCst)
    }

    /// The reason the signal fired with, if it fired with one.
    #[must_use]
    pub fn reason(&self) -> Option<Reason> {
        if !self.is_aborted() {
            return None;
        }
        lock(&self.inner.state).reason.clone()
    }

    /// A future that resolves once the signal has fired (at once if it already has).
    pub fn aborted(&self) -> Aborted {
        Aborted {
            signal: self.clone(),
            listener: None,
        }
    }

    /// Runs `callback` with the reason when the signal fires; at once, on this thread, if it has
    /// fired already.
    ///
    /// Dropping the returned guard removes a callback that has not run yet;
    /// [`AbortCallback::detach`] keeps it for the signal's whole life.
    pub fn on_abort<F>(&self, callback: F) -> AbortCallback
    where
        F: FnOnce(Option<&Reason>) + Send + 'static,
    {
        let mut state = lock(&self.inner.state);
        if state.fired {
            let reason = state.reason.clone();
            drop(state);
            callback(reason.as_ref());
            return AbortCallback {
                signal: None,
                slot: 0,
            };
        }
        if state.closed {
            // It will never fire: keeping the callback would only keep its captures alive.
            drop(state);
            drop(callback);
            return AbortCallback {
                signal: None,
                slot: 0,
            };
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
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn fire(&self, reason: Option<Reason>) -> bool {
        let callbacks = {
            let mut state = lock(&self.inner.state);
            if state.fired {
                return false;
            }
            state.fired = true;
            state.reason = reason.clone();
            // `SeqCst`: read by a waiter after it listens (see `Notify`).
            self.inner.aborted.store(true, Ordering::SeqCst);
            std::mem::take(&mut state.callbacks)
        };
        self.inner.event.notify_all();
        if let Some(callbacks) = callbacks {
            run_callbacks(*callbacks, reason);
        }
        true
    }

    /// Declares that the signal will never fire (its run ended by itself): drops the callbacks
    /// registered so far, outside the lock, and every later one at once.
    pub(crate) fn close(&self) {
        let callbacks = {
            let mut state = lock(&self.inner.state);
            if state.fired {
                return;
            }
            state.closed = true;
            std::mem::take(&mut state.callbacks)
        };
        // A callback's captures may do anything on drop, panic included: that must not stop the
        // run from finishing.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| drop(callbacks)));
    }

    pub(crate) fn listen(&self) -> EventListener {
        self.inner.event.listen()
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
/// A panicking callback does not stop the others; the first panic resumes from the outermost
/// call once every queued callback has run.
fn run_callbacks(callbacks: Slab<Callback>, reason: Option<Reason>) {
    let nested = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        match pending.as_mut() {
            Some(queue) => {
                queue.push_back((callbacks, reason.clone()));
                None
            }
            None => {
                *pending = Some(VecDeque::new());
                Some((callbacks, reason.clone()))
            }
        }
    });
    let Some(first) = nested else {
        return;
    };
    // Clears the queue even if dropping a payload below unwinds.
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            let _ = PENDING.try_with(|pending| pending.borrow_mut().take());
        }
    }
    let done = Done;
    let mut panic = Deferred::default();
    let mut batch = Some(first);
    while let Some((callbacks, reason)) = batch.take().or_else(|| {
        PENDING.with(|pending| pending.borrow_mut().as_mut().and_then(VecDeque::pop_front))
    }) {
        for (_, callback) in callbacks {
            panic.catch(|| callback(reason.as_ref()));
        }
    }
    drop(done);
    panic.resume();
}

impl fmt::Debug for AbortSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AbortSignal");
        d.field("aborted", &self.is_aborted());
        match self.inner.state.try_lock() {
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
pub struct Aborted {
    signal: AbortSignal,
    listener: Option<EventListener>,
}

impl Future for Aborted {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.signal.is_aborted() {
                self.listener = None;
                return Poll::Ready(());
            }
            match self.listener.as_mut() {
                // Register first, then re-check the flag, so a `fire` in between is not missed.
                None => self.listener = Some(self.signal.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl fmt::Debug for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aborted")
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
    /// Keeps the callback registered for as long as the signal lives.
    pub fn detach(mut self) {
        self.signal = None;
    }
}

impl Drop for AbortCallback {
    fn drop(&mut self) {
        if let Some(signal) = self.signal.take() {
            let removed = {
                let mut state = lock(&signal.inner.state);
                // After `fire` the slab was taken, so the slot is gone (or reused: never, since a
                // fired signal accepts no new slots).
                if state.fired {
                    None
                } else {
                    state
                        .callbacks
                        .as_mut()
                        .and_then(|callbacks| callbacks.try_remove(self.slot))
                }
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
