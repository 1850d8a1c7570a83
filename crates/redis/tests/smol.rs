//! The repository on smol: connections, timers and the default spawner come from smol when no
//! tokio runtime is current.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{RedisServer, Seen, TTL};
use futures::stream;
use keyrunner_redis::{ClusterRepository, Outcome, Reason};

fn replica(server: &RedisServer) -> common::Repo {
    smol::block_on(
        ClusterRepository::builder(server.url())
            .namespace("test")
            .lease_ttl(TTL)
            .connect(),
    )
    .unwrap()
}

#[test]
fn runs_stops_and_listens_on_smol() {
    let server = RedisServer::start();
    let owner = replica(&server);
    let watcher = replica(&server);
    smol::block_on(async {
        let key = "k".to_owned();
        let seen = Seen::default();
        let _listening = watcher
            .listen(key.clone(), seen.listener(), true)
            .await
            .unwrap();
        let handle = owner
            .run(key.clone(), |_cx| {
                stream::iter(["a".to_owned(), "b".to_owned()])
            })
            .await
            .unwrap();
        assert_eq!(handle.await, Outcome::Completed);
        let running = owner
            .run(key.clone(), |_cx| stream::pending::<String>())
            .await
            .unwrap();
        let signal = running.abort_signal().unwrap();
        watcher.stop(&key, Reason::from("smol")).await.unwrap();
        signal.aborted().await;
        assert_eq!(
            running.await,
            Outcome::Stopped {
                reason: Some(Reason::from("smol"))
            }
        );
        // Timers work: a lease outlives several renewals.
        let long = owner
            .run("long".to_owned(), |_cx| stream::pending::<String>())
            .await
            .unwrap();
        smol::Timer::after(TTL + TTL / 2).await;
        assert!(!long.is_finished(), "renewed on smol's timers");
        owner.stop(&"long".to_owned(), None).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let stopped = Outcome::Stopped {
            reason: Some(Reason::from("smol")),
        };
        while !seen
            .states()
            .last()
            .is_some_and(|state| state.last_outcome() == Some(&stopped))
        {
            assert!(std::time::Instant::now() < deadline, "{:?}", seen.states());
            smol::Timer::after(Duration::from_millis(1)).await;
        }
        let items: Vec<_> = seen
            .states()
            .iter()
            .filter(|state| state.is_running())
            .filter_map(|state| state.progress().cloned())
            .collect();
        assert_eq!(items, ["a", "b"]);
    });
}
