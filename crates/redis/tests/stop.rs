//! D3: a stop from any replica idles the key for everyone at once, and the owner's abort
//! signal fires within one round trip, or within TTL/3 when the notification is lost.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Probe, RedisServer, TTL, command, hash, replica};
use futures::stream;
use keyrunner_redis::{Outcome, Reason, State, StopError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_from_another_replica_idles_the_key_everywhere_and_aborts_the_owner() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let stopper = replica(&server, TTL).await;
    let reader = replica(&server, TTL).await;
    let key = "k".to_owned();
    let (probe, dropped) = Probe::new(None, Duration::from_millis(2));
    let handle = owner.run(key.clone(), move |_cx| probe).await.unwrap();
    let signal = handle.abort_signal().unwrap();

    let started = Instant::now();
    let stopped = stopper.stop(&key, Reason::from("user")).await.unwrap();
    assert_eq!(stopped, handle.run_id());
    let stopped = reader.state(&key).await.unwrap();
    assert!(stopped.is_idle(), "visible at once");
    assert_eq!(
        stopped.last_outcome(),
        Some(&Outcome::Stopped {
            reason: Some(Reason::from("user")),
        })
    );
    tokio::time::timeout(Duration::from_millis(100), signal.aborted())
        .await
        .expect("the owner's signal fires within one round trip");
    let latency = started.elapsed();
    assert_eq!(signal.reason(), Some(Reason::from("user")));
    assert_eq!(
        handle.await,
        Outcome::Stopped {
            reason: Some(Reason::from("user"))
        }
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the stream is dropped");
    assert!(latency < Duration::from_millis(100), "{latency:?}");
}

#[tokio::test]
async fn a_lost_notification_still_aborts_the_owner_within_a_third_of_the_ttl() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let key = "k".to_owned();
    let handle = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let signal = handle.abort_signal().unwrap();
    // A stop whose message never reaches the owner: the key is made idle behind its back.
    let outcome = serde_json::to_string(&Outcome::<String>::Stopped {
        reason: Some(Reason::from("behind its back")),
    })
    .unwrap();
    let started = Instant::now();
    let _: () = command(&server, &["HSET", &hash("k"), "s", "i", "x", &outcome]);
    tokio::time::timeout(TTL / 3 + Duration::from_millis(100), signal.aborted())
        .await
        .expect("the owner's next write finds the key idle");
    assert_eq!(signal.reason(), Some(Reason::from("behind its back")));
    assert!(started.elapsed() <= TTL / 3 + Duration::from_millis(100));
    assert_eq!(
        handle.await,
        Outcome::Stopped {
            reason: Some(Reason::from("behind its back"))
        }
    );
}

#[tokio::test]
async fn stopping_an_idle_key_is_a_typed_error() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let error = repository
        .stop(&"nobody".to_owned(), None)
        .await
        .unwrap_err();
    assert!(matches!(error, StopError::Idle), "{error:?}");
    assert!(error.is_already_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_this_replicas_runs_in_redis_and_refuses_new_ones() {
    let server = RedisServer::start();
    let leaving = replica(&server, TTL).await;
    let staying = replica(&server, TTL).await;
    let mine = leaving
        .run("mine".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let theirs = staying
        .run("theirs".to_owned(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    tokio::time::timeout(TTL, leaving.shutdown(Reason::from("deploy")))
        .await
        .expect("shutdown resolves once every stream is dropped");
    assert_eq!(leaving.live_tasks(), 0);
    assert_eq!(
        mine.await,
        Outcome::Stopped {
            reason: Some(Reason::from("deploy"))
        }
    );
    assert!(
        staying.state(&"mine".to_owned()).await.unwrap().is_idle(),
        "written to Redis"
    );
    assert!(!theirs.is_finished(), "other replicas' runs go on");
    let refused = leaving
        .run("again".to_owned(), |_cx| stream::empty::<String>())
        .await
        .unwrap_err();
    assert!(refused.is_shut_down());
}

#[tokio::test]
async fn after_shutdown_streams_end_and_listen_is_refused() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let other = replica(&server, TTL).await;
    let key = "k".to_owned();
    let remote = other
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let handle = repository
        .run_with(key.clone(), keyrunner_redis::Conflict::UseExisting, |_cx| {
            stream::empty::<String>()
        })
        .await
        .unwrap();
    assert!(!handle.is_local());
    let mut states = repository.stream(key.clone());
    let first = tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .unwrap();
    assert!(
        first
            .unwrap()
            .unwrap()
            .state()
            .is_some_and(State::is_running)
    );
    repository.shutdown(None).await;
    let last = tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .unwrap();
    assert_eq!(
        last.unwrap().unwrap_err().kind(),
        keyrunner_redis::ErrorKind::ShutDown
    );
    let end = tokio::time::timeout(TTL, futures::StreamExt::next(&mut states))
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends");
    let refused = repository
        .listen(key.clone(), |_| {}, true)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), keyrunner_redis::ErrorKind::ShutDown);
    assert_eq!(
        tokio::time::timeout(TTL, handle).await.unwrap(),
        Outcome::Lost,
        "a remote run's end is no longer heard here"
    );
    assert!(!remote.is_finished(), "the other replica's run goes on");
}
