//! [`AbortController`] and [`AbortSignal`]: "you are asked to stop", fired at most once.

use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use event_listener::EventListener;
use slab::Slab;

use crate::notify::Notify;
use crate::state::Reason;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, lock};

type Callback = Box<dyn FnOnce(Option<&Reason>) + Send>;

struct Inner {
    /// Set once, after `reason` is written, so a reader that sees `true` also sees the reason.
    aborted: AtomicBool,
    state: Mutex<SignalState>,
    event: Notify,
}

struct SignalState {
    fired: bool,
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
    pub fn abort(&self, reason: Option<Reason>) -> bool {
        self.signal.fire(reason)
    }

    /// Whether the signal has fired.
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        self.signal.is_aborted()
    }
}

impl Default for AbortSignal {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                aborted: AtomicBool::new(false),
                state: Mutex::new(SignalState {
                    fired: false,
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
        let mut first_panic = None;
        for (_, callback) in callbacks
            .into_iter()
            .flat_map(|callbacks| callbacks.into_iter())
        {
            let result = panic::catch_unwind(AssertUnwindSafe(|| callback(reason.as_ref())));
            if let Err(payload) = result {
                first_panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = first_panic {
            panic::resume_unwind(payload);
        }
        true
    }

    pub(crate) fn listen(&self) -> EventListener {
        self.inner.event.listen()
    }
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
