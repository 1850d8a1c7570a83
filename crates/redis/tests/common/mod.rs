//! Test support: a private Redis per test, replicas on it, and probes.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

/// The private server, from the crate's `test-util` feature.
pub mod server {
    pub use keyrunner_redis::testing::*;
}

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use keyrunner_redis::{ClusterRepository, Error, Event, State};
pub use server::{Persistence, RedisServer};

/// The repository most tests use: string keys, string progress, string errors.
pub type Repo = ClusterRepository<String, String, String>;

/// What listeners receive.
pub type Item = Result<Event<String, String>, Error>;

/// The lease TTL of most tests.
pub const TTL: Duration = Duration::from_millis(1000);

/// A replica on `server` (namespace `test`), with lease `ttl`.
pub async fn replica(server: &RedisServer, ttl: Duration) -> Repo {
    ClusterRepository::builder(server.url())
        .namespace("test")
        .lease_ttl(ttl)
        .connect()
        .await
        .expect("connect a replica to the private redis-server")
}

/// Waits for `condition` with a watchdog: fails the test after `within`. Polling, not ordering:
/// the condition is what the test waits for.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, what: &str, mut condition: F) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Everything a listener received, in order.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<Item>>>);

impl Seen {
    pub fn listener(&self) -> impl Fn(&Item) + Send + Sync + 'static {
        let sink = Arc::clone(&self.0);
        move |item: &Item| sink.lock().unwrap().push(item.clone())
    }

    pub fn items(&self) -> Vec<Item> {
        self.0.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Event<String, String>> {
        self.items().into_iter().filter_map(Result::ok).collect()
    }

    /// The `State` events' states, in order (deltas left out).
    pub fn states(&self) -> Vec<State<String, String>> {
        self.events()
            .into_iter()
            .filter_map(Event::into_state)
            .collect()
    }

    pub fn last(&self) -> Option<Item> {
        self.0.lock().unwrap().last().cloned()
    }

    pub fn any(&self, predicate: impl Fn(&Item) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(predicate)
    }
}

/// A stream that yields `items` items ("0", "1", …) every `every` (or forever for `None`) and
/// counts its own drop.
pub struct Probe {
    next: u64,
    items: Option<u64>,
    every: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    dropped: Arc<AtomicUsize>,
}

impl Probe {
    pub fn new(items: Option<u64>, every: Duration) -> (Self, Arc<AtomicUsize>) {
        let dropped = Arc::new(AtomicUsize::new(0));
        let probe = Self {
            next: 0,
            items,
            every,
            sleep: None,
            dropped: Arc::clone(&dropped),
        };
        (probe, dropped)
    }
}

impl Stream for Probe {
    type Item = String;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        if self.items.is_some_and(|items| self.next >= items) {
            return Poll::Ready(None);
        }
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        self.next += 1;
        Poll::Ready(Some((self.next - 1).to_string()))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads a list or hash of the private server with a plain command.
pub fn command<T: redis::FromRedisValue>(server: &RedisServer, args: &[&str]) -> T {
    let mut conn = server.connection();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).unwrap()
}

/// The audit list (feature `audit`, on in every test build), parsed.
pub fn audit(server: &RedisServer) -> Vec<serde_json::Value> {
    let lines: Vec<String> = command(server, &["LRANGE", "test:audit", "0", "-1"]);
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The Redis name of `key`'s hash in namespace `test`.
pub fn hash(key: &str) -> String {
    format!("test:k:{}", serde_json::to_string(key).unwrap())
}

/// The Redis name of `key`'s channel in namespace `test`.
pub fn channel(key: &str) -> String {
    format!("test:c:{}", serde_json::to_string(key).unwrap())
}
