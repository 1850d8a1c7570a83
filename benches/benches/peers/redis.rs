//! The hand-rolled Redis runner a team would write instead: `SET key token NX PX ttl` to
//! acquire, one `PUBLISH` per progress item (awaited, in order), a renewal every TTL/3, a
//! compare-and-delete script to release, and a stop sent as a `PUBLISH` to the owner's control
//! channel (the owner cancels the run's token).
//!
//! It keeps no state for idle keys, has no fence (a zombie's items are published all the same),
//! no audit, no resynchronisation; it is what keyrunner-redis is measured against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use tokio_util::sync::CancellationToken;

/// Releases the lock only if this runner still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Renews the lock only if this runner still holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerOutcome {
    Completed,
    Stopped,
}

/// One replica of the hand-rolled runner.
#[derive(Clone)]
pub(crate) struct HandRolledRedis {
    conn: ConnectionManager,
    owner: String,
    ttl: Duration,
    runs: Arc<Mutex<HashMap<String, CancellationToken>>>,
    release: Arc<redis::Script>,
    renew: Arc<redis::Script>,
}

impl HandRolledRedis {
    pub(crate) async fn connect(url: &str, owner: &str, ttl: Duration) -> Self {
        let client = redis::Client::open(url).expect("a valid URL");
        // No response timeout: with `appendfsync always` on a busy disk one call can take longer
        // than the client's default, and the peer would panic where it should only be slow.
        let config = ConnectionManagerConfig::new().set_response_timeout(None);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .expect("connect");
        let runs: Arc<Mutex<HashMap<String, CancellationToken>>> = Arc::default();
        // The control channel: a stop for one of this replica's runs cancels its token.
        let router = Arc::clone(&runs);
        let resp3 = format!("{url}?protocol=resp3");
        let subscriber = redis::Client::open(resp3.as_str()).expect("a valid URL");
        let config = ConnectionManagerConfig::new().set_push_sender(move |push: PushInfo| {
            if push.kind == PushKind::Message
                && let [_, Value::BulkString(key)] = push.data.as_slice()
                && let Some(token) = router
                    .lock()
                    .expect("nothing panics while the runs table is locked")
                    .get(&*String::from_utf8_lossy(key))
            {
                token.cancel();
            }
            Ok::<(), std::convert::Infallible>(())
        });
        let mut control = ConnectionManager::new_with_config(subscriber, config)
            .await
            .expect("connect the control channel");
        control
            .subscribe(format!("peer:stop:{owner}"))
            .await
            .expect("subscribe");
        std::mem::forget(control);
        Self {
            conn,
            owner: owner.to_owned(),
            ttl,
            runs,
            release: Arc::new(redis::Script::new(RELEASE)),
            renew: Arc::new(redis::Script::new(RENEW)),
        }
    }

    /// Acquires `key` and drives `items` on a tokio task; `None` when another runner holds it.
    /// The token is the run's abort signal.
    pub(crate) async fn run<S>(
        &self,
        key: &str,
        items: S,
    ) -> Option<(tokio::task::JoinHandle<PeerOutcome>, CancellationToken)>
    where
        S: Stream<Item = String> + Send + 'static,
    {
        let mut conn = self.conn.clone();
        let lock = format!("peer:lock:{key}");
        let acquired: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&self.owner)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .expect("SET NX PX");
        acquired?;
        let token = CancellationToken::new();
        self.runs
            .lock()
            .expect("nothing panics while the runs table is locked")
            .insert(key.to_owned(), token.clone());
        let channel = format!("peer:c:{key}");
        let (owner, ttl, runs, key) = (
            self.owner.clone(),
            self.ttl,
            Arc::clone(&self.runs),
            key.to_owned(),
        );
        let (release, renew) = (Arc::clone(&self.release), Arc::clone(&self.renew));
        let signal = token.clone();
        let task = tokio::spawn(async move {
            let _: i64 = conn.publish(&channel, "running").await.expect("PUBLISH");
            let mut items = std::pin::pin!(items);
            let mut renewal = tokio::time::interval(ttl / 3);
            renewal.tick().await;
            let outcome = loop {
                tokio::select! {
                    () = token.cancelled() => break PeerOutcome::Stopped,
                    _ = renewal.tick() => {
                        let _: i64 = renew.key(&lock).arg(&owner).arg(ttl.as_millis() as u64)
                            .invoke_async(&mut conn).await.expect("renew");
                    }
                    item = items.next() => match item {
                        Some(item) => {
                            let _: i64 = conn.publish(&channel, item).await.expect("PUBLISH");
                        }
                        None => break PeerOutcome::Completed,
                    },
                }
            };
            if outcome == PeerOutcome::Completed {
                let _: i64 = release
                    .key(&lock)
                    .arg(&owner)
                    .invoke_async(&mut conn)
                    .await
                    .expect("release");
                let _: i64 = conn.publish(&channel, "idle").await.expect("PUBLISH");
            }
            runs.lock()
                .expect("nothing panics while the runs table is locked")
                .remove(&key);
            outcome
        });
        Some((task, signal))
    }

    /// Stops `key` from this replica, wherever it runs: deletes the lock and tells its owner.
    pub(crate) async fn stop(&self, key: &str) -> bool {
        let mut conn = self.conn.clone();
        let lock = format!("peer:lock:{key}");
        let owner: Option<String> = conn.get(&lock).await.expect("GET");
        let Some(owner) = owner else { return false };
        let _: i64 = self
            .release
            .key(&lock)
            .arg(&owner)
            .invoke_async(&mut conn)
            .await
            .expect("release");
        let _: i64 = conn
            .publish(format!("peer:stop:{owner}"), key)
            .await
            .expect("PUBLISH");
        let _: i64 = conn
            .publish(format!("peer:c:{key}"), "idle")
            .await
            .expect("PUBLISH");
        true
    }
}
