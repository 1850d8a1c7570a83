//! D4: a dead owner's key becomes idle with `Lost` within TTL + TTL/4 (+ one round trip) of its
//! last renewal, and another replica can run it; an owner that cannot renew demotes itself
//! before Redis could give its key away. (The fault suite does the same with real processes.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{RedisServer, Seen, TTL, audit, eventually, replica};
use futures::stream;
use keyrunner_redis::{Outcome, lease_lost};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_key_is_lost_within_the_bound_and_runs_elsewhere() {
    let server = RedisServer::start();
    let survivor = replica(&server, TTL).await;
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = survivor
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    // The owner lives on a runtime of its own, which dies without a word: its connections close,
    // its runs are dropped with it, nothing is released.
    let url = server.url();
    let fence = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let fence = runtime.block_on(async move {
            let owner: common::Repo = keyrunner_redis::ClusterRepository::builder(url)
                .namespace("test")
                .lease_ttl(TTL)
                .connect()
                .await
                .unwrap();
            let handle = owner
                .run("k".to_owned(), |_cx| stream::pending::<String>())
                .await
                .unwrap();
            let fence = handle.run_id();
            std::mem::forget((owner, handle));
            fence
        });
        runtime.shutdown_background();
        fence
    })
    .join()
    .unwrap();
    eventually(TTL * 2, "the key idle with Lost", || {
        seen.states()
            .last()
            .is_some_and(|state| state.is_idle() && state.last_outcome() == Some(&Outcome::Lost))
    })
    .await;
    let lost_at = now_ms();
    let last_write = audit(&server)
        .iter()
        .filter(|entry| entry["f"] == fence.get() && entry["op"] != "reap" && entry["op"] != "stop")
        .map(|entry| entry["t"].as_u64().unwrap() / 1000)
        .max()
        .unwrap();
    let bound = (TTL + TTL / 4 + Duration::from_millis(100)).as_millis() as u64;
    assert!(
        lost_at - last_write <= bound,
        "Lost after {} ms",
        lost_at - last_write
    );
    let next = survivor
        .run(key.clone(), |_cx| stream::empty::<String>())
        .await
        .unwrap();
    assert!(next.run_id() > fence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_cannot_renew_demotes_itself_before_its_redis_deadline() {
    let server = RedisServer::start();
    let owner = replica(&server, TTL).await;
    let key = "k".to_owned();
    let handle = owner
        .run(key.clone(), |_cx| stream::pending::<String>())
        .await
        .unwrap();
    let signal = handle.abort_signal().unwrap();
    let fence = handle.run_id().get();
    let before = audit(&server);
    server.pause();
    let paused = Instant::now();
    let aborted = tokio::time::timeout(TTL * 2, signal.aborted()).await;
    let demoted_at = now_ms();
    server.resume();
    aborted.expect("the owner demotes itself while Redis cannot answer");
    assert_eq!(signal.reason(), Some(lease_lost()));
    assert_eq!(handle.await, Outcome::Lost);
    // Redis's deadline is the one set by the last write it accepted before the pause.
    let deadline = before
        .iter()
        .chain(audit(&server).iter())
        .filter(|entry| entry["f"] == fence && entry["t"].as_u64().unwrap() / 1000 < demoted_at)
        .filter_map(|entry| entry["d"].as_u64())
        .max()
        .unwrap();
    assert!(
        demoted_at < deadline,
        "demoted at {demoted_at}, Redis deadline {deadline}"
    );
    assert!(
        paused.elapsed() >= TTL / 3,
        "it did not give up at the first failed call"
    );
    // Nothing is revived: once Redis answers again, the key is reaped.
    eventually(TTL * 2, "the key reaped", || {
        let entries = audit(&server);
        entries
            .iter()
            .any(|entry| entry["op"] == "reap" && entry["f"] == fence)
    })
    .await;
    let state = owner.state(&key).await.unwrap();
    assert!(state.is_idle());
    assert_eq!(state.last_outcome(), Some(&Outcome::Lost));
}

/// Foreign or corrupt data under the namespace stops no reaping: a lease entry whose key is
/// not a hash, or is a running hash without a fence, used to fail the reap script, every time,
/// for every replica: no dead owner's key was ever reaped again (D4, D8). Reading such a key is
/// still a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_under_the_namespace_stops_no_reaping() {
    let server = RedisServer::start();
    let survivor = replica(&server, TTL).await;
    let _: () = common::command(&server, &["SET", &common::hash("foreign"), "x"]);
    let _: i64 = common::command(&server, &["ZADD", "test:leases", "0", "\"foreign\""]);
    let _: i64 = common::command(&server, &["HSET", &common::hash("corrupt"), "s", "r"]);
    let _: i64 = common::command(&server, &["ZADD", "test:leases", "0", "\"corrupt\""]);
    let key = "k".to_owned();
    let seen = Seen::default();
    let _listening = survivor
        .listen(key.clone(), seen.listener(), true)
        .await
        .unwrap();
    // An owner that dies without a word (as in the test above).
    let url = server.url();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let owner: common::Repo = keyrunner_redis::ClusterRepository::builder(url)
                .namespace("test")
                .lease_ttl(TTL)
                .connect()
                .await
                .unwrap();
            let handle = owner
                .run("k".to_owned(), |_cx| stream::pending::<String>())
                .await
                .unwrap();
            std::mem::forget((owner, handle));
        });
        runtime.shutdown_background();
    })
    .join()
    .unwrap();
    eventually(TTL * 2, "the dead owner's key idle with Lost", || {
        seen.states()
            .last()
            .is_some_and(|state| state.is_idle() && state.last_outcome() == Some(&Outcome::Lost))
    })
    .await;
    for foreign in ["foreign", "corrupt"] {
        let error = survivor.state(&foreign.to_owned()).await.unwrap_err();
        assert!(error.is_codec(), "{foreign}: {error:?}");
    }
}
