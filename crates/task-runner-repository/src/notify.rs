//! [`Notify`]: an event that costs nothing until someone waits on it.

use event_listener::{Event, EventListener};

use crate::sync::{AtomicBool, Ordering};

/// An [`Event`] that is notified only once someone has listened to it.
///
/// Notifying an `Event` nobody ever listened to allocates its shared state, and every run has an
/// abort signal that is almost never awaited. Skipping that notification is a Dekker pair: a
/// waiter raises `listened`, listens, then checks its condition again; a notifier makes the
/// condition true, then reads `listened`. With all four accesses `SeqCst`, at least one side
/// sees the other: either the waiter sees the condition, or the notifier sees the waiter.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    listened: AtomicBool,
    event: Event,
}

impl Notify {
    /// Registers a listener. The caller must check its condition again afterwards, with a
    /// `SeqCst` load, before it waits.
    pub(crate) fn listen(&self) -> EventListener {
        self.listened.store(true, Ordering::SeqCst);
        self.event.listen()
    }

    /// Wakes every listener. The caller must have made its condition true with a `SeqCst`
    /// store (or read-modify-write) first.
    pub(crate) fn notify_all(&self) {
        if self.listened.load(Ordering::SeqCst) {
            self.event.notify(usize::MAX);
        }
    }
}
