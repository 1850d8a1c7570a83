//! `TopicStream`: latest-value semantics, wake-ups, and the lease it holds on its key.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::stream::FusedStream;
use futures_test::task::new_count_waker;
use keyrunner_pub_sub::PubSub;

fn poll<S: Stream + Unpin>(stream: &mut S, waker: &Waker) -> Poll<Option<S::Item>> {
    Pin::new(stream).poll_next(&mut Context::from_waker(waker))
}

#[test]
fn first_poll_yields_the_initial_value() {
    let topics = PubSub::<&str, u32>::builder()
        .initial_value(|_| Some(1))
        .build();
    let mut stream = topics.stream("k");
    let (waker, _) = new_count_waker();
    assert_eq!(poll(&mut stream, &waker), Poll::Ready(Some(1)));
    assert_eq!(poll(&mut stream, &waker), Poll::Pending);
}

#[test]
fn yields_the_latest_value_skipping_intermediate_ones() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let mut stream = topics.stream("k");
    let (waker, _) = new_count_waker();
    assert_eq!(poll(&mut stream, &waker), Poll::Pending);
    for value in 1..=3 {
        topics.next("k", value);
    }
    assert_eq!(poll(&mut stream, &waker), Poll::Ready(Some(3)));
    assert_eq!(poll(&mut stream, &waker), Poll::Pending);
}

#[test]
fn wakes_on_next() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let topic = topics.subject("k");
    let mut stream = topic.stream();
    let (waker, count) = new_count_waker();
    assert_eq!(poll(&mut stream, &waker), Poll::Pending);
    assert_eq!(count.get(), 0);
    topic.next(7);
    assert!(count.get() >= 1, "the waker fired");
    assert_eq!(poll(&mut stream, &waker), Poll::Ready(Some(7)));
    assert!(!stream.is_terminated());
}

#[test]
fn stream_keeps_its_key_allocated_until_dropped() {
    let topics: PubSub<&str, u32> = PubSub::new();
    let mut stream = topics.stream("k");
    assert!(topics.is_allocated("k"));
    topics.next("k", 1); // allocated: not dropped
    let (waker, _) = new_count_waker();
    assert_eq!(poll(&mut stream, &waker), Poll::Ready(Some(1)));
    assert_eq!(topics.last(&"k").as_deref(), Some(&1));
    drop(stream);
    assert!(!topics.is_allocated("k"));
    assert!(topics.is_empty());
}

#[test]
fn works_with_an_executor() {
    use futures::StreamExt;
    let topics: PubSub<&str, String> = PubSub::new();
    let stream = topics.stream("k");
    let publisher = topics.clone();
    let handle = std::thread::spawn(move || {
        // The stream holds the key, so nothing sent here is dropped.
        for n in 0..100 {
            publisher.next("k", n.to_string());
        }
        publisher.next("k", "done".to_owned());
    });
    let last = futures::executor::block_on(
        stream
            .take_while(|value| futures::future::ready(value != "done"))
            .fold(None::<u32>, |previous, value| {
                let value: u32 = value.parse().unwrap_or(u32::MAX);
                assert!(
                    previous.is_none_or(|p| p < value),
                    "{previous:?} then {value}"
                );
                futures::future::ready(Some(value))
            }),
    );
    handle
        .join()
        .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
    assert!(last.is_none_or(|value| value < 100));
    assert!(topics.is_empty());
}
