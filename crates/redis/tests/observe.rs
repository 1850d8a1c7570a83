//! D5: every replica's listeners see each key's events in order, without duplicates, at
//! increasing positions, resynchronising from the stored state after a disconnection; deltas
//! reach every replica; bad messages arrive as typed errors and the stream goes on.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, Seen, TTL, channel, command, eventually, replica};
use futures::{StreamExt, stream};
use keyrunner_redis::{Delta, ErrorKind, Event, Outcome, Position, Reason, State};

fn positions(seen: &Seen) -> Vec<Position> {
    seen.events().iter().map(Event::position).collect()
}

fn strictly_increasing(positions: &[Position]) -> bool {
    positions.windows(2).all(|pair| pair[0] < pair[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_on_every_replica_see_every_event_in_order() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let watchers = [replica(&server, TTL).await, replica(&server, TTL).await];
    let key = "k".to_owned();
    let mut logs = Vec::new();
    let mut subscriptions = Vec::new();
    for watcher in watchers.iter().chain([&owner]) {
        let log = Seen::default();
        subscriptions.push(
            watcher
                .listen(key.clone(), log.listener(), true)
                .await
                .unwrap(),
        );
        logs.push(log);
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
    for log in &logs {
        eventually(TTL, "the run's end everywhere", || {
            log.states().len() > 1 && log.states().last().is_some_and(State::is_idle)
        })
        .await;
        let events = log.events();
        assert_eq!(
            events[0],
            Event::State {
                position: Position::new(None, 0),
                state: State::Idle {
                    last: None,
                    progress: None
                },
            },
            "the current state first"
        );
        assert_eq!(
            events[1],
            Event::State {
                position: Position::new(Some(run), 0),
                state: State::Running {
                    run,
                    progress: None
                },
            }
        );
        let items_seen: Vec<String> = log.states()[2..52]
            .iter()
            .filter_map(|state| state.progress().cloned())
            .collect();
        assert_eq!(items_seen, items, "every item, in order, once");
        assert_eq!(events[2].position(), Position::new(Some(run), 1));
        assert_eq!(
            events.last().unwrap(),
            &Event::State {
                position: Position::new(Some(run), 51),
                state: State::Idle {
                    last: Some(Outcome::Completed),
                    progress: Some(Arc::new("49".to_owned())),
                },
            }
        );
        assert!(strictly_increasing(&positions(log)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_reach_every_replica_and_late_listeners_start_from_the_accumulated_value() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let watcher = replica(&server, TTL).await;
    let key = "reply".to_owned();
    let early = Seen::default();
    let _early = watcher
        .listen(key.clone(), early.listener(), true)
        .await
        .unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded::<Delta<String>>();
    let handle = owner.run(key.clone(), move |_cx| rx).await.unwrap();
    let run = handle.run_id();
    for delta in ["Hel", "lo", ", "] {
        tx.unbounded_send(Delta(delta.to_owned())).unwrap();
    }
    eventually(TTL, "three deltas", || {
        early
            .events()
            .iter()
            .filter(|event| event.delta().is_some())
            .count()
            == 3
    })
    .await;
    // A listener joining now starts from everything accumulated, then gets the next deltas.
    let late = Seen::default();
    let _late = watcher
        .listen(key.clone(), late.listener(), true)
        .await
        .unwrap();
    assert_eq!(
        late.events()[0],
        Event::State {
            position: Position::new(Some(run), 3),
            state: State::Running {
                run,
                progress: Some(Arc::new("Hello, ".to_owned()))
            },
        }
    );
    tx.unbounded_send(Delta("world".to_owned())).unwrap();
    drop(tx);
    assert_eq!(handle.await, Outcome::Completed);
    for log in [&early, &late] {
        eventually(TTL, "the end", || {
            log.states().last().is_some_and(State::is_idle)
        })
        .await;
        assert_eq!(
            log.states().last().unwrap().progress().map(String::as_str),
            Some("Hello, world"),
            "the final progress is the accumulated value"
        );
        assert!(strictly_increasing(&positions(log)));
    }
    let deltas: Vec<String> = early
        .events()
        .iter()
        .filter_map(|event| event.delta().cloned())
        .collect();
    assert_eq!(deltas, ["Hel", "lo", ", ", "world"]);
    let late_deltas: Vec<String> = late
        .events()
        .iter()
        .filter_map(|event| event.delta().cloned())
        .collect();
    assert_eq!(late_deltas, ["world"]);
    assert_eq!(
        owner
            .state(&key)
            .await
            .unwrap()
            .progress()
            .map(String::as_str),
        Some("Hello, world"),
        "Redis stores the accumulated value"
    );
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
    let mut events = watcher.stream(key.clone());
    let first = tokio::time::timeout(TTL, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.position().run_id(), Some(handle.run_id()));
    assert!(first.state().is_some_and(State::is_running));
    owner.stop(&key, Reason::from("done")).await.unwrap();
    loop {
        let next = tokio::time::timeout(TTL, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(next.position() > first.position());
        if let Some(state) = next.state()
            && state.is_idle()
        {
            assert_eq!(
                state.last_outcome(),
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
    eventually(TTL, "the first items", || seen.events().len() >= 10).await;
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
    assert!(
        strictly_increasing(&positions(&seen)),
        "in order, no duplicate: {:?}",
        positions(&seen)
    );
    let stored = watcher.event(&key).await.unwrap();
    assert_eq!(
        seen.events().last().unwrap(),
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
    let mut events = owner.stream(key.clone());
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
        match tokio::time::timeout(TTL, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Err(error) => {
                assert!(error.is_codec());
                errors += 1;
            }
            Ok(event)
                if event
                    .state()
                    .is_some_and(|state| state.last_outcome() == Some(&Outcome::Completed)) =>
            {
                break;
            }
            Ok(_) => {}
        }
    }
    assert_eq!(errors, 1);
}

#[tokio::test]
async fn listen_without_immediate_sees_only_later_events() {
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
    eventually(Duration::from_secs(1), "two events", || {
        seen.states().len() == 2
    })
    .await;
    assert!(
        seen.states()[0].is_running(),
        "no replay of the idle state before the run"
    );
}
