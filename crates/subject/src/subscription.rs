//! The [`Subscription`] guard.

use std::fmt;
use std::sync::Weak;

/// What a subscription needs from its subject, with the value type erased.
pub(crate) trait Unsubscribe: Send + Sync {
    /// Removes listener `id` if it is still registered.
    fn unsubscribe(&self, id: u64);
}

/// A registered listener; dropping it (or calling [`unsubscribe`](Self::unsubscribe)) removes
/// the listener.
///
/// Returned by [`Subject::listen`](crate::Subject::listen). It is not generic, so guards of
/// subjects of different types fit in one collection. It holds only a weak reference: it does
/// not keep the subject alive, and removing a listener from a subject that is gone does nothing.
///
/// Once removal returns, the listener is not called again. Removing it from the thread that is
/// delivering to it (from inside a listener of the same subject) returns at once: a call already
/// running, such as the listener removing itself, finishes normally. Removing it from any other
/// thread while a value is being delivered waits until that value has reached every listener;
/// except from inside a listener of another subject (or a layer's callback): that removal
/// returns at once, and only a delivery already under way may still reach the listener, once.
/// See the [crate documentation](crate#who-waits-for-whom).
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use keyrunner_subject::Subject;
///
/// let subject = Subject::new();
/// let calls = Arc::new(AtomicUsize::new(0));
/// let counter = Arc::clone(&calls);
/// let subscription = subject.listen(
///     move |_: &()| {
///         counter.fetch_add(1, Ordering::Relaxed);
///     },
///     false,
/// );
/// subject.next(());
/// subscription.unsubscribe();
/// subject.next(());
/// assert_eq!(calls.load(Ordering::Relaxed), 1);
/// ```
#[must_use = "dropping a Subscription unsubscribes the listener"]
pub struct Subscription {
    subject: Weak<dyn Unsubscribe>,
    id: u64,
}

impl Subscription {
    pub(crate) fn new(subject: Weak<dyn Unsubscribe>, id: u64) -> Self {
        Self { subject, id }
    }

    /// Removes the listener; the same as dropping the guard, spelled out.
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(subject) = self.subject.upgrade() {
            subject.unsubscribe(self.id);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
