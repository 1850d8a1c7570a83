//! D1 (one accepted run per key, cluster-wide) and D2 (fenced writes), in one process with
//! several replicas on a private Redis.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Probe, RedisServer, Seen, TTL, audit, command, eventually, hash, replica};
use futures::stream;
use keyrunner_redis::{Conflict, Outcome, Reason, RunError, State, StateNode, StopError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_racing_runs_on_three_replicas_exactly_one_wins() {
    let server = RedisServer::start();
    let replicas = [
        replica(&server, TTL).await,
        replica(&server, TTL).await,
        replica(&server, TTL).await,
    ];
    for round in 0..40 {
        let key = format!("race-{round}");
        let attempts = (0..9).map(|attempt| {
            let replica = replicas[attempt % 3].clone();
            let key = key.clone();
            tokio::spawn(async move {
                replica
                    .run(key, |_cx| stream::pending::<String>())
                    .await
                    .map_err(RunError::without_task)
            })
        });
        let results: Vec<_> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let winners: Vec<_> = results
            .iter()
            .filter_map(|result| result.as_ref().ok())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let fence = winners[0].run_id();
        for result in &results {
            if let Err(error) = result {
                assert!(
                    matches!(error, RunError::Busy { running, .. } if *running == fence),
                    "round {round}: {error:?}"
                );
            }
        }
        replicas[0].stop(&key, None).await.unwrap();
    }
}

#[tokio::test]
async fn the_fence_is_the_run_id_in_the_context_the_handle_and_the_state() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let seen = Arc::new(AtomicU64::new(0));
    let sink = Arc::clone(&seen);
    let handle = repository
        .run("k".to_owned(), move |cx| {
            sink.store(cx.run_id().get(), Ordering::SeqCst);
            stream::pending::<String>()
        })
        .await
        .unwrap();
    let fence = handle.run_id();
    eventually(TTL, "the task to start", || {
        seen.load(Ordering::SeqCst) != 0
    })
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), fence.get());
    assert_eq!(
        repository.state(&"k".to_owned()).await.unwrap().run_id(),
        Some(fence)
    );
    let stored: String = command(&server, &["HGET", &hash("k"), "f"]);
    assert_eq!(stored, fence.get().to_string());
}

#[tokio::test]
async fn fences_strictly_increase_even_after_the_key_expired() {
    let server = RedisServer::start();
    let repository: common::Repo = keyrunner_redis::ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(TTL)
        .retention(Duration::from_millis(30))
        .connect()
        .await
        .unwrap();
    let key = "k".to_owned();
    let mut previous = 0;
    for _ in 0..3 {
        let handle = repository
            .run(key.clone(), |_cx| stream::iter(["a".to_owned()]))
            .await
            .unwrap();
        assert!(handle.run_id().get() > previous);
        previous = handle.run_id().get();
        assert_eq!(handle.await, Outcome::Completed);
        // The idle key is forgotten after its retention: the next fence comes from the clock.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while command::<bool>(&server, &["EXISTS", &hash("k")]) {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle key never expired"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn a_stale_running_node_cannot_stop_a_later_run() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let other = replica(&server, TTL).await;
    let key = "k".to_owned();
    let first = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let StateNode::Running(stale) = other.state_node(key.clone()).await.unwrap() else {
        panic!("the key runs");
    };
    assert_eq!(stale.run_id(), first.run_id());
    assert_eq!(stale.owner(), owner.replica_id());
    owner.stop(&key, Reason::from("first")).await.unwrap();
    let second = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let error = stale.stop(Reason::from("stale")).await.unwrap_err();
    assert!(
        matches!(error, StopError::Ended { run } if run == first.run_id()),
        "{error:?}"
    );
    assert_eq!(
        owner.state(&key).await.unwrap(),
        State::Running {
            run: second.run_id(),
            progress: None
        }
    );
    assert!(!second.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_writes_nothing_and_nobody_sees_its_items() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let other = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = other
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    let (probe, dropped) = Probe::new(None, Duration::from_millis(1));
    let handle = owner.run(key.clone(), move |_cx| probe).await.unwrap();
    let fence = handle.run_id().get();
    eventually(TTL, "items", || seen.events().len() > 5).await;
    other.stop(&key, Reason::from("enough")).await.unwrap();
    assert_eq!(
        handle.await,
        Outcome::Stopped {
            reason: Some(Reason::from("enough"))
        }
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the stream is dropped");
    // Another run takes the key; nothing of the first is accepted or seen after its stop.
    let next = owner
        .run(key.clone(), |_cx| stream::iter(["x".to_owned()]))
        .await
        .unwrap();
    next.await;
    let entries = audit(&server);
    let stop = entries
        .iter()
        .position(|entry| entry["op"] == "stop" && entry["f"] == fence)
        .unwrap();
    assert!(
        entries[stop..]
            .iter()
            .skip(1)
            .all(|entry| entry["f"] != fence),
        "a write of the stopped run after its stop: {entries:?}"
    );
    eventually(TTL, "the second run's end", || {
        matches!(
            seen.last(),
            Some(Ok(event)) if event.state().is_some_and(State::is_idle)
                && event.position().run_id().is_some_and(|run| run.get() != fence)
        )
    })
    .await;
    let events = seen.events();
    let run_of = |event: &keyrunner_redis::Event<String, String>| {
        event.position().run_id().map(keyrunner_redis::RunId::get)
    };
    let stopped_at = events
        .iter()
        .position(|event| event.state().is_some_and(State::is_idle) && run_of(event) == Some(fence))
        .unwrap();
    assert!(
        events[stopped_at + 1..]
            .iter()
            .all(|event| run_of(event) != Some(fence)),
        "an event of the stopped run after its stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_policies_across_replicas() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let other = replica(&server, TTL).await;
    let key = "k".to_owned();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let first = owner
        .run(key.clone(), move |_cx| {
            futures::StreamExt::map(stream::once(rx), |_| "done".to_owned())
        })
        .await
        .unwrap();

    let rejected = other
        .run_with(key.clone(), Conflict::Reject, |_cx| {
            stream::empty::<String>()
        })
        .await
        .unwrap_err();
    assert!(matches!(rejected, RunError::Busy { running, .. } if running == first.run_id()));
    assert!(rejected.into_task().is_some(), "the task comes back");

    // A handle to a run on another replica resolves when this replica hears it end.
    let existing = other
        .run_with(key.clone(), Conflict::UseExisting, |_cx| {
            stream::empty::<String>()
        })
        .await
        .unwrap();
    assert_eq!(existing.run_id(), first.run_id());
    assert!(!existing.is_local());
    tx.send(()).unwrap();
    assert_eq!(existing.await, Outcome::Completed);
    assert_eq!(first.await, Outcome::Completed);

    let second = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let replacement = other
        .run_with(key.clone(), Conflict::Replace, |_cx| {
            stream::pending::<String>()
        })
        .await
        .unwrap();
    assert!(replacement.run_id() > second.run_id());
    assert!(replacement.is_local());
    assert_eq!(
        second.await,
        Outcome::Stopped {
            reason: Some(Reason::superseded())
        }
    );
}

/// `calls` of `command` in `INFO commandstats`.
fn calls(server: &RedisServer, command_name: &str) -> u64 {
    let info: String = command(server, &["INFO", "commandstats"]);
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command_name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_owners_hot_path_is_at_most_one_round_trip_per_transition() {
    let server = RedisServer::start();
    // A long lease: no renewal and no reaper call falls inside the measurement.
    let repository: common::Repo = keyrunner_redis::ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let _: () = command(&server, &["CONFIG", "RESETSTAT"]);
    // Three transitions (running, one item, idle): the acquisition, then one write that carries
    // the item and the end.
    let handle = repository
        .run("one".to_owned(), |_cx| stream::iter(["a".to_owned()]))
        .await
        .unwrap();
    assert_eq!(handle.await, Outcome::Completed);
    assert_eq!(calls(&server, "evalsha"), 2);
    // 1,002 transitions: items queued while a write is in flight go in the next one.
    let _: () = command(&server, &["CONFIG", "RESETSTAT"]);
    let handle = repository
        .run("many".to_owned(), |_cx| {
            stream::iter((0..1000).map(|i: u32| i.to_string()))
        })
        .await
        .unwrap();
    handle.await;
    let round_trips = calls(&server, "evalsha");
    assert!(
        round_trips <= 4,
        "{round_trips} round trips for 1,002 transitions"
    );
}

/// A handle taken (from a node, or `UseExisting`) after its run ended resolves to the outcome
/// Redis recorded, whatever this replica's watch delivered last: it used to look only at the
/// events of the watch's last delivery, so when that was an error (a foreign message, a failed
/// read) rather than the run's end, the handle waited for a transition that had already come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_taken_after_its_run_ended_resolves_to_the_recorded_outcome() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let other = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = other
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    let run = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let StateNode::Running(node) = other.state_node(key.clone()).await.unwrap() else {
        panic!("the key runs");
    };
    owner.stop(&key, Reason::from("done")).await.unwrap();
    run.await;
    eventually(TTL, "the end on the other replica", || {
        seen.states().last().is_some_and(State::is_idle)
    })
    .await;
    // Something that is not a transition, after the end: an error item, nothing else.
    let _: i64 = command(&server, &["PUBLISH", &common::channel("k"), "{not json"]);
    eventually(TTL, "the error", || {
        seen.last().is_some_and(|item| item.is_err())
    })
    .await;

    let handle = node.handle().await.unwrap();
    assert!(!handle.is_local());
    assert_eq!(
        tokio::time::timeout(TTL, handle)
            .await
            .expect("the handle resolves"),
        Outcome::Stopped {
            reason: Some(Reason::from("done"))
        }
    );
}

/// `UseExisting` on a run this replica's watch of the key has not heard start yet resolves to
/// that run's outcome, not `Lost`: the handle used to take the watch's last delivery (the key
/// with no history, from before the run) for a data loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_existing_on_a_run_this_replica_has_not_heard_start_yet_follows_it() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let other = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = other
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    // A listener of another key holds the other replica's dispatcher until released: what
    // Redis publishes meanwhile waits in its queue.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let holding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&holding);
    let _slow = other
        .listen(
            "slow".to_owned(),
            move |_| {
                flag.store(true, Ordering::SeqCst);
                // Blocking as tokio wants it done, so that the runtime's other worker keeps
                // driving timers and sockets meanwhile.
                tokio::task::block_in_place(|| {
                    let _ = held.lock().unwrap().recv();
                });
            },
            false,
        )
        .await
        .unwrap();
    owner
        .run("slow".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap()
        .detach();
    eventually(TTL, "the dispatcher held", || {
        holding.load(Ordering::SeqCst)
    })
    .await;

    let run = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let existing = other
        .run_with(key.clone(), Conflict::UseExisting, |_cx| {
            stream::empty::<String>()
        })
        .await
        .unwrap();
    assert_eq!(existing.run_id(), run.run_id());
    let early = existing.outcome();
    drop(release);
    assert_eq!(early, None, "the run goes on");
    owner.stop(&key, Reason::from("done")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(TTL, existing).await.unwrap(),
        Outcome::Stopped {
            reason: Some(Reason::from("done"))
        }
    );
}
