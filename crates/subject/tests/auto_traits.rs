//! Auto traits of every public type.

use keyrunner_subject::{Subject, SubjectStream, Subscription};

fn send_sync<T: Send + Sync>() {}
fn unpin<T: Unpin>() {}

#[test]
fn public_types_are_send_sync_and_unpin() {
    send_sync::<Subject<u32>>();
    send_sync::<Subscription>();
    send_sync::<SubjectStream<u32>>();
    unpin::<Subject<u32>>();
    unpin::<Subscription>();
    unpin::<SubjectStream<u32>>();
    // Values need not be `Unpin` for the stream to be.
    unpin::<SubjectStream<std::marker::PhantomPinned>>();
}
