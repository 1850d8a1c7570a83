//! Test support: a private Redis per test group, and repositories on it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod server;

use std::time::Duration;

use keyrunner_redis::ClusterRepository;
pub use server::{Persistence, RedisServer};

/// The repository most tests use: string keys, string progress, string errors.
pub type Repo = ClusterRepository<String, String, String>;

/// A replica on `server` in `namespace`, with a short lease.
pub async fn replica(server: &RedisServer, namespace: &str, ttl: Duration) -> Repo {
    ClusterRepository::builder(server.url())
        .namespace(namespace)
        .lease_ttl(ttl)
        .connect()
        .await
        .expect("connect a replica to the private redis-server")
}

/// Waits for `condition` with a watchdog: fails the test after `within`.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, what: &str, mut condition: F) {
    let deadline = std::time::Instant::now() + within;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
