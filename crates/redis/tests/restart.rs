//! D6: replicas reconnect and resubscribe by themselves; with AOF no accepted run is forgotten;
//! without persistence the data loss is detected and every local run ends `Lost`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Persistence, RedisServer, Seen, TTL, eventually, replica};
use futures::{StreamExt, stream};
use keyrunner_redis::{Outcome, Reason, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_aof_forgets_no_run_and_replicas_come_back_by_themselves() {
    let mut server = RedisServer::start_with(Persistence::AppendAlways);
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
    tx.unbounded_send("before".to_owned()).unwrap();
    eventually(TTL, "the first item", || {
        seen.states().iter().any(|s| s.progress().is_some())
    })
    .await;
    server.restart();
    assert_eq!(
        watcher.state(&key).await.unwrap(),
        State::Running {
            run: handle.run_id(),
            progress: Some(std::sync::Arc::new("before".to_owned()))
        }
    );
    tx.unbounded_send("after".to_owned()).unwrap();
    eventually(TTL * 2, "an item after the restart", || {
        seen.states()
            .iter()
            .any(|s| s.progress().map(String::as_str) == Some("after"))
    })
    .await;
    watcher.stop(&key, Reason::from("done")).await.unwrap();
    assert_eq!(
        handle.await,
        Outcome::Stopped {
            reason: Some(Reason::from("done"))
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_lost_the_data_ends_local_runs_lost_and_fences_stay_above() {
    let mut server = RedisServer::start();
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
    server.restart_empty();
    let restarted = std::time::Instant::now();
    let outcome = tokio::time::timeout(TTL / 3 + Duration::from_millis(200), handle.clone())
        .await
        .expect("the owner notices within its next round trip");
    assert_eq!(outcome, Outcome::Lost);
    assert!(restarted.elapsed() <= TTL / 3 + Duration::from_millis(200));
    assert_eq!(
        watcher.state(&key).await.unwrap(),
        State::Idle {
            last: None,
            progress: None
        }
    );
    loop {
        // While Redis restarts, the stream may also say it could not read the key (typed).
        match tokio::time::timeout(TTL, states.next())
            .await
            .unwrap()
            .unwrap()
        {
            Ok(event) if event.position() == keyrunner_redis::Position::new(None, 0) => {
                assert_eq!(
                    event.state(),
                    Some(&State::Idle {
                        last: None,
                        progress: None
                    })
                );
                break;
            }
            Ok(_) => {}
            Err(error) => assert!(!error.is_codec(), "{error:?}"),
        }
    }
    let next = watcher
        .run(key.clone(), |_cx| stream::empty::<String>())
        .await
        .unwrap();
    assert!(
        next.run_id() > handle.run_id(),
        "fences stay above every old fence"
    );
}
