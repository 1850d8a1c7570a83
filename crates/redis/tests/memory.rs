//! D7: idle keys expire from Redis after the retention; a replica keeps nothing for a key
//! nobody on it holds (no watch, no subscription, no run).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{RedisServer, Seen, TTL, channel, command, eventually, hash, replica};
use futures::stream;

#[tokio::test]
async fn idle_keys_expire_after_the_retention_running_keys_never() {
    let server = RedisServer::start();
    let repository: common::Repo = keyrunner_redis::ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(TTL)
        .retention(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let key = "k".to_owned();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let handle = repository
        .run(key.clone(), move |_cx| {
            futures::StreamExt::map(stream::once(rx), |_| "x".to_owned())
        })
        .await
        .unwrap();
    let running: i64 = command(&server, &["PTTL", &hash("k")]);
    assert_eq!(running, -1, "a running key never expires");
    tx.send(()).unwrap();
    handle.await;
    let idle: i64 = command(&server, &["PTTL", &hash("k")]);
    assert!(
        (59_000..=60_000).contains(&idle),
        "an idle key expires after the retention: {idle}"
    );
    let leases: i64 = command(&server, &["ZCARD", "test:leases"]);
    assert_eq!(leases, 0);
}

#[tokio::test]
async fn a_replica_keeps_nothing_for_a_key_nobody_on_it_holds() {
    let server = RedisServer::start();
    let repository = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let subscription = repository
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    let stream = repository.stream(key.clone());
    assert_eq!(repository.watched_keys(), 1);
    let subscribers = || {
        let counts: Vec<(String, i64)> = command(&server, &["PUBSUB", "NUMSUB", &channel("k")]);
        counts[0].1
    };
    assert_eq!(subscribers(), 1, "one subscription per key per replica");
    let handle = repository
        .run(key.clone(), |_cx| stream::iter(["a".to_owned()]))
        .await
        .unwrap();
    assert_eq!(repository.local_runs(), 1);
    handle.await;
    assert_eq!(repository.local_runs(), 0);
    drop(subscription);
    assert_eq!(repository.watched_keys(), 1, "the stream still watches");
    drop(stream);
    assert_eq!(repository.watched_keys(), 0);
    eventually(TTL, "the unsubscription", || subscribers() == 0).await;
}

/// A retention beyond what Redis's `PEXPIRE` accepts (`Duration::MAX`: "keep them") keeps idle
/// keys, and runs end as usual: every script that ends a run used to fail half-way through (the
/// key written idle, the end never published nor audited), so the owner's handle said `Lost`
/// while Redis said `Completed`, and no listener heard the end.
#[tokio::test]
async fn a_retention_beyond_what_redis_accepts_keeps_idle_keys() {
    let server = RedisServer::start();
    let repository: common::Repo = keyrunner_redis::ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(TTL)
        .retention(Duration::MAX)
        .connect()
        .await
        .unwrap();
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = repository
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    let handle = repository
        .run(key.clone(), |_cx| stream::iter(["a".to_owned()]))
        .await
        .unwrap();
    assert_eq!(handle.await, keyrunner_redis::Outcome::Completed);
    eventually(TTL, "the end heard", || {
        seen.states()
            .last()
            .is_some_and(|state| state.last_outcome() == Some(&keyrunner_redis::Outcome::Completed))
    })
    .await;
    let idle: i64 = command(&server, &["PTTL", &hash("k")]);
    assert!(idle == -1 || idle > 1_000_000_000_000, "kept: {idle}");
    assert!(
        common::audit(&server)
            .iter()
            .any(|entry| entry["op"] == "finish"),
        "the end is audited"
    );
}
