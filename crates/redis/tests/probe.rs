#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{RedisServer, TTL, command, hash};
use futures::stream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_g_retention_max() {
    let server = RedisServer::start();
    let repo: common::Repo = keyrunner_redis::ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(TTL)
        .retention(Duration::MAX)
        .connect()
        .await
        .unwrap();
    let h = repo
        .run("k".to_owned(), |_cx| stream::iter(["a".to_owned()]))
        .await
        .unwrap();
    let o = tokio::time::timeout(TTL * 2, h).await;
    println!("outcome {o:?}");
    let st = repo.state(&"k".to_owned()).await;
    println!("state {st:?}");
    let ttl: i64 = command(&server, &["PTTL", &hash("k")]);
    println!("pttl {ttl}");
    let a = common::audit(&server);
    println!("audit {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_h_ttl_huge() {
    let server = RedisServer::start();
    let repo: common::Repo = keyrunner_redis::ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(Duration::MAX)
        .connect()
        .await
        .unwrap();
    let h = repo
        .run("k".to_owned(), |_cx| stream::iter(["a".to_owned()]))
        .await;
    println!(
        "run {:?}",
        h.as_ref().map(|h| h.run_id()).map_err(|e| format!("{e:?}"))
    );
}
