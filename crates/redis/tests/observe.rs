//! D5: every replica's listeners see each key's transitions in order, without duplicates,
//! resynchronising from the stored state after a disconnection; bad messages arrive as typed
//! errors and the stream goes on.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{RedisServer, Seen, TTL, channel, command, eventually, replica};
use futures::{StreamExt, stream};
use keyrunner_redis::{ErrorKind, Outcome, Reason, State};

fn progress(state: &State<String, String>) -> Option<String> {
    state.progress().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_on_every_replica_see_every_transition_in_order() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let watchers = [replica(&server, TTL).await, replica(&server, TTL).await];
    let key = "k".to_owned();
    let mut seen = Vec::new();
    let mut subscriptions = Vec::new();
    for watcher in watchers.iter().chain([&owner]) {
        let log = Seen::default();
        subscriptions.push(
            watcher
                .listen(key.clone(), log.listener(), true)
                .await
                .unwrap(),
        );
        seen.push(log);
    }
    let items: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let handle = owner
        .run(key.clone(), {
            let items = items.clone();
            move |_cx| stream::iter(items)
        })
        .await
        .unwrap();
    let run = handle.run_id();
    assert_eq!(handle.await, Outcome::Completed);
    for log in &seen {
        eventually(TTL, "the run's end everywhere", || {
            log.states().last().is_some_and(State::is_idle) && log.states().len() > 1
        })
        .await;
        let states = log.states();
        assert_eq!(
            states[0],
            State::Idle { last: None },
            "the current state first"
        );
        assert_eq!(
            states[1],
            State::Running {
                run,
                progress: None
            }
        );
        let items_seen: Vec<String> = states[2..states.len() - 1]
            .iter()
            .filter_map(progress)
            .collect();
        assert_eq!(items_seen, items, "every item, in order, once");
        assert_eq!(
            states.last().unwrap(),
            &State::Idle {
                last: Some(Outcome::Completed)
            }
        );
        let seqs: Vec<u64> = log.transitions().iter().map(|t| t.seq()).collect();
        assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_with_the_current_state_and_follows_another_replica() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let watcher = replica(&server, TTL).await;
    let key = "k".to_owned();
    let handle = owner
        .run(key.clone(), |_cx| {
            stream::iter(["a".to_owned()]).chain(stream::pending())
        })
        .await
        .unwrap();
    let mut states = watcher.stream(key.clone());
    let first = tokio::time::timeout(TTL, states.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.fence(), Some(handle.run_id()));
    assert!(first.state().is_running());
    owner.stop(&key, Reason::from("done")).await.unwrap();
    loop {
        let next = tokio::time::timeout(TTL, states.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(next.seq() > first.seq());
        if next.state().is_idle() {
            assert_eq!(
                next.state().last_outcome(),
                Some(&Outcome::Stopped {
                    reason: Some(Reason::from("done"))
                })
            );
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_subscriber_is_killed_a_listener_resynchronises_and_ends_in_the_stored_state() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let watcher = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = watcher
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
    let handle = owner.run(key.clone(), move |_cx| rx).await.unwrap();
    for i in 0..20 {
        tx.unbounded_send(i.to_string()).unwrap();
    }
    eventually(TTL, "the first items", || seen.transitions().len() >= 10).await;
    let killed: i64 = command(&server, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed >= 2, "every replica's subscriber was killed");
    for i in 20..40 {
        tx.unbounded_send(i.to_string()).unwrap();
    }
    drop(tx);
    assert_eq!(handle.await, Outcome::Completed);
    eventually(TTL * 2, "the run's end after the reconnection", || {
        seen.states()
            .last()
            .is_some_and(|state| state.last_outcome() == Some(&Outcome::Completed))
    })
    .await;
    let seqs: Vec<u64> = seen.transitions().iter().map(|t| t.seq()).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, no duplicate: {seqs:?}"
    );
    let stored = watcher.transition(&key).await.unwrap();
    assert_eq!(
        seen.transitions().last().unwrap(),
        &stored,
        "ends in the stored state"
    );
}

#[tokio::test]
async fn a_message_that_cannot_be_decoded_reaches_listeners_as_a_typed_error() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = owner
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    let mut states = owner.stream(key.clone());
    let _: i64 = command(&server, &["PUBLISH", &channel("k"), "{not json"]);
    eventually(TTL, "the error", || seen.any(Result::is_err)).await;
    let error = seen.items().into_iter().find_map(Result::err).unwrap();
    assert_eq!(error.kind(), ErrorKind::Decode);
    // The listener and the stream go on.
    let handle = owner
        .run(key.clone(), |_cx| stream::iter(["a".to_owned()]))
        .await
        .unwrap();
    handle.await;
    eventually(TTL, "the run after the error", || {
        seen.states()
            .last()
            .is_some_and(|state| state.last_outcome() == Some(&Outcome::Completed))
    })
    .await;
    let mut errors = 0;
    loop {
        match tokio::time::timeout(TTL, states.next())
            .await
            .unwrap()
            .unwrap()
        {
            Err(error) => {
                assert!(error.is_codec());
                errors += 1;
            }
            Ok(transition) if transition.state().last_outcome() == Some(&Outcome::Completed) => {
                break;
            }
            Ok(_) => {}
        }
    }
    assert_eq!(errors, 1);
}

#[tokio::test]
async fn listen_without_immediate_sees_only_later_transitions() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = repository
        .listen(key.clone(), seen.listener(), false)
        .await
        .unwrap();
    let handle = repository
        .run(key.clone(), |_cx| stream::empty::<String>())
        .await
        .unwrap();
    handle.await;
    eventually(Duration::from_secs(1), "two transitions", || {
        seen.states().len() == 2
    })
    .await;
    assert!(seen.states()[0].is_running());
}
