//! Send, Sync, Unpin and 'static for every public type, with ordinary keys and values.

use keyrunner_pub_sub::{Builder, PubSub, Subscription, Topic, TopicStream};

fn send_sync<T: Send + Sync>() {}
fn unpin<T: Unpin>() {}
fn static_<T: 'static>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<PubSub<String, Vec<u8>>>();
    send_sync::<Builder<String, Vec<u8>>>();
    send_sync::<Topic<String, Vec<u8>>>();
    send_sync::<Subscription<String, Vec<u8>>>();
    send_sync::<TopicStream<String, Vec<u8>>>();
}

#[test]
fn handles_are_unpin_and_static() {
    unpin::<TopicStream<String, Vec<u8>>>();
    unpin::<Subscription<String, Vec<u8>>>();
    static_::<Subscription<String, Vec<u8>>>();
    static_::<Topic<String, Vec<u8>>>();
    static_::<TopicStream<String, Vec<u8>>>();
}

#[test]
fn handles_can_move_to_other_threads() {
    let topics: PubSub<String, u32> = PubSub::new();
    let subscription = topics.listen("k".to_owned(), |_| {}, false);
    let topic = topics.subject("k".to_owned());
    std::thread::scope(|scope| {
        scope.spawn(move || {
            topic.next(1);
            drop(subscription);
        });
    });
    assert!(topics.is_empty());
}
