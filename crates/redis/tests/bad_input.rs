//! D8: Redis unreachable → a typed error and no task started; foreign or corrupt data under the
//! namespace → typed errors; values that cannot be encoded → typed errors or an outcome that
//! names the codec; a slow listener never blocks an owner.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{RedisServer, TTL, command, hash, replica};
use futures::stream;
use keyrunner_redis::{ClusterRepository, ErrorKind, Outcome, RunError};
use serde::{Deserialize, Serialize, Serializer};

#[tokio::test]
async fn an_unreachable_redis_is_a_typed_error() {
    let started = Instant::now();
    let error = ClusterRepository::<String, String, String>::builder(
        "redis+unix:///nonexistent/redis.sock",
    )
    .lease_ttl(TTL)
    .call_timeout(Duration::from_millis(100))
    .connect()
    .await
    .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{error:?}"
    );
    // Connecting gets four call timeouts.
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_run_while_redis_is_down_fails_typed_and_starts_nothing() {
    let mut server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    server.kill();
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let error = repository
        .run("k".to_owned(), move |_cx| {
            flag.store(true, Ordering::SeqCst);
            stream::empty::<String>()
        })
        .await
        .unwrap_err();
    assert!(matches!(error, RunError::Failed { .. }), "{error:?}");
    let state = repository.state(&"k".to_owned()).await.unwrap_err();
    assert!(matches!(
        state.kind(),
        ErrorKind::Unavailable | ErrorKind::Timeout
    ));
    assert!(!started.load(Ordering::SeqCst), "the task was not started");
    assert!(error.into_task().is_some(), "the task comes back");
}

#[tokio::test]
async fn foreign_or_corrupt_data_under_the_namespace_is_a_typed_error() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let read = |key: &str| {
        let repository = repository.clone();
        let key = key.to_owned();
        async move { repository.state(&key).await.unwrap_err().kind() }
    };
    let _: () = command(&server, &["SET", &hash("a string"), "x"]);
    assert_eq!(read("a string").await, ErrorKind::Corrupt);
    let _: () = command(&server, &["HSET", &hash("odd"), "s", "zzz"]);
    assert_eq!(read("odd").await, ErrorKind::Corrupt);
    let _: () = command(
        &server,
        &["HSET", &hash("no number"), "s", "r", "f", "x", "q", "1"],
    );
    assert_eq!(read("no number").await, ErrorKind::Corrupt);
    let _: () = command(
        &server,
        &[
            "HSET",
            &hash("bad json"),
            "s",
            "r",
            "f",
            "1",
            "q",
            "1",
            "a",
            "1",
            "p",
            "{",
        ],
    );
    assert_eq!(read("bad json").await, ErrorKind::Decode);
    // Acting on it is refused with a typed error too, never a panic.
    let error = repository
        .run("a string".to_owned(), |_cx| stream::empty::<String>())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RunError::Failed { error, .. } if error.kind() == ErrorKind::Corrupt),
        "{error:?}"
    );
    let _: () = command(&server, &["ZADD", "test:leases", "1", "not json"]);
    let running = repository.running_keys().await;
    assert!(
        running.is_ok(),
        "the reaper dropped the stray lease entry or it is not live: {running:?}"
    );
}

/// A value whose serialization always fails.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no wire form"))
    }
}

#[tokio::test]
async fn progress_that_cannot_be_encoded_ends_the_run_naming_the_codec() {
    let server = RedisServer::start();
    let repository: ClusterRepository<String, Unencodable, String> =
        ClusterRepository::builder(server.url())
            .namespace("test")
            .lease_ttl(TTL)
            .connect()
            .await
            .unwrap();
    let handle = repository
        .run("k".to_owned(), |_cx| stream::iter([Unencodable]))
        .await
        .unwrap();
    let Outcome::Panicked {
        message: Some(message),
    } = handle.await
    else {
        panic!("the run ends naming the codec");
    };
    assert!(message.contains("could not be encoded"), "{message}");
    let stored = repository.state(&"k".to_owned()).await.unwrap();
    assert!(matches!(
        stored.last_outcome(),
        Some(Outcome::Panicked { .. })
    ));
}

#[tokio::test]
async fn a_key_that_cannot_be_encoded_is_a_typed_error() {
    let server = RedisServer::start();
    #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
    struct Key;
    impl Serialize for Key {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no wire form"))
        }
    }
    let repository: ClusterRepository<Key, String, String> =
        ClusterRepository::builder(server.url())
            .lease_ttl(TTL)
            .connect()
            .await
            .unwrap();
    assert_eq!(
        repository.state(&Key).await.unwrap_err().kind(),
        ErrorKind::Encode
    );
    let error = repository
        .run(Key, |_cx| stream::empty::<String>())
        .await
        .unwrap_err();
    assert!(matches!(&error, RunError::Failed { error, .. } if error.kind() == ErrorKind::Encode));
    assert!(repository.listen(Key, |_| {}, true).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_listener_never_blocks_the_owner() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let watcher = replica(&server, TTL).await;
    let key = "k".to_owned();
    // 2 ms per item, blocking: 500 items would take a second to watch.
    let _slow = watcher
        .listen(
            key.clone(),
            |_| std::thread::sleep(Duration::from_millis(2)),
            true,
        )
        .await
        .unwrap();
    let started = Instant::now();
    let handle = owner
        .run(key.clone(), |_cx| {
            stream::iter((0..500).map(|i: u32| i.to_string()))
        })
        .await
        .unwrap();
    assert_eq!(handle.await, Outcome::Completed);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the owner waited: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_configuration_that_cannot_work_is_refused() {
    let server = RedisServer::start();
    let error = ClusterRepository::<String, String, String>::builder(server.url())
        .lease_ttl(Duration::from_millis(300))
        .call_timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::Config,
        "a call timeout must be below TTL/3"
    );
    // A lease TTL so long that deadlines cannot be computed used to panic in `run` (an overflow
    // of its arithmetic); it is refused up front.
    let error = ClusterRepository::<String, String, String>::builder(server.url())
        .lease_ttl(Duration::MAX)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error:?}");
}
