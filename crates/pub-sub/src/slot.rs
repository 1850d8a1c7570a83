//! The value a topic's key holds in the registry: its subject and whether it ever emitted.

use std::sync::Arc;

use keyrunner_subject::Subject;

use crate::sync::{AtomicBool, Ordering};

/// One allocated topic: the subject plus the "has emitted" flag the cleanup predicate reads.
///
/// A slot lives exactly as long as its key stays allocated; a key that is freed and allocated
/// again gets a fresh slot (a fresh subject, `emitted == false`).
pub(crate) struct Slot<V> {
    pub(crate) subject: Subject<V>,
    emitted: AtomicBool,
}

impl<V: Send + Sync + 'static> Slot<V> {
    /// A slot whose subject starts with `initial` (which is not an emission).
    pub(crate) fn new(initial: Option<Arc<V>>) -> Self {
        let subject = match initial {
            Some(value) => Subject::with_shared_value(value),
            None => Subject::new(),
        };
        Self {
            subject,
            emitted: AtomicBool::new(false),
        }
    }

    /// Emits `value` on the subject.
    ///
    /// The flag is set first, so a listener that panics (and makes `next` unwind) still leaves
    /// the slot marked as emitted.
    pub(crate) fn next(&self, value: V) {
        self.emitted.store(true, Ordering::Release);
        self.subject.next(value);
    }

    /// `Subject::update`, marking the slot as emitted exactly when `f` decides to emit.
    pub(crate) fn update(&self, f: impl FnOnce(Option<&V>) -> Option<V>) -> bool {
        self.subject.update(|last| {
            let next = f(last);
            if next.is_some() {
                self.emitted.store(true, Ordering::Release);
            }
            next
        })
    }

    /// Whether `next` or an emitting `update` ever ran on this slot.
    pub(crate) fn emitted(&self) -> bool {
        self.emitted.load(Ordering::Acquire)
    }
}
