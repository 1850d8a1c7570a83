//! Model checks: listening, emitting and releasing one key from two threads at once.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use keyrunner_pub_sub::PubSub;

#[test]
fn listen_and_release_racing_next_leaves_nothing_allocated() {
    loom::model(|| {
        let topics: PubSub<u8, u8> = PubSub::new();
        let calls = Arc::new(AtomicUsize::new(0));

        let listener_side = {
            let (topics, calls) = (topics.clone(), Arc::clone(&calls));
            thread::spawn(move || {
                let subscription = topics.listen(
                    0,
                    move |value: &u8| {
                        assert_eq!(*value, 1);
                        calls.fetch_add(1, Ordering::SeqCst);
                    },
                    true,
                );
                drop(subscription);
            })
        };
        topics.next(0, 1);
        listener_side
            .join()
            .expect("the listener thread does not panic");

        // The value reached the listener at most once, and the key went with its last holder.
        assert!(calls.load(Ordering::SeqCst) <= 1);
        assert!(topics.is_empty());
    });
}

#[test]
fn kept_key_survives_a_racing_release() {
    loom::model(|| {
        let topics = PubSub::<u8, u8>::builder()
            .should_cleanup(|_, last| *last == 0)
            .build();

        let other = {
            let topics = topics.clone();
            thread::spawn(move || drop(topics.subject(0)))
        };
        topics.next(0, 1);
        other.join().expect("the other thread does not panic");

        // The emitted value is worth keeping, whoever released the key last.
        assert!(topics.is_allocated(&0));
        assert_eq!(topics.last(&0).as_deref(), Some(&1));
    });
}
