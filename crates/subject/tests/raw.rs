//! `RawSubject`, the subject without its shared handle: closing it while a value is delivered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use keyrunner_subject::raw::RawSubject;

/// Counts the drops of the listener that owns it.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A listener that closes its subject from inside the delivery: the delivering thread holds the
/// listeners then, so it must notice the close when it hands them back, drop them, and deliver
/// nothing afterwards.
#[test]
fn closing_from_a_listener_drops_the_listeners_once_the_delivery_ends() {
    let subject = Arc::new(RawSubject::<u32>::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let closer = {
        let subject: Weak<RawSubject<u32>> = Arc::downgrade(&subject);
        let calls = Arc::clone(&calls);
        let guard = DropCount(Arc::clone(&drops));
        move |_: &u32| {
            let DropCount(_) = &guard;
            calls.fetch_add(1, Ordering::SeqCst);
            if let Some(subject) = subject.upgrade() {
                subject.close();
            }
        }
    };
    let _id = subject.listen(closer, false);

    subject.next(1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the delivering thread drops the listeners of a subject closed during its delivery"
    );
    assert!(subject.is_closed());

    subject.next(2);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a closed subject's values reach no listener"
    );
    assert_eq!(subject.last().as_deref(), Some(&2));
}
