//! keyrunner across replicas, on Redis: at most one task per key **cluster-wide**, a stop from
//! any replica, and every replica's listeners see every key's transitions.
//!
//! Most users want the [`keyrunner`](https://docs.rs/keyrunner) crate with its `redis` feature,
//! which re-exports this one as `keyrunner::redis`. The in-process repository
//! ([`keyrunner_task_runner_repository`]) is the right tool for one process; this crate is for a
//! service with several replicas behind a load balancer, where a request to stop conversation 42
//! lands on a replica that is not running it.
//!
//! # Concepts
//!
//! - A [`ClusterRepository`] is one **replica**'s handle on a namespace of a Redis shared by
//!   every replica. It mirrors the in-process repository: [`state`](ClusterRepository::state),
//!   [`state_node`](ClusterRepository::state_node) → an [`IdleNode`] that can only
//!   [`run`](IdleNode::run) or a [`RunningNode`] that can only [`stop`](RunningNode::stop) (each
//!   acts only on the state it saw), [`run_with`](ClusterRepository::run_with) and a
//!   [`Conflict`] policy, [`stop`](ClusterRepository::stop) by key,
//!   [`running_keys`](ClusterRepository::running_keys), [`listen`](ClusterRepository::listen) and
//!   [`stream`](ClusterRepository::stream), [`shutdown`](ClusterRepository::shutdown).
//!   Everything that consults Redis is `async` and bounded by a call timeout.
//! - A run's id is its **fence**: a number Redis issues when the run starts, strictly increasing
//!   per key. The task sees it in its [`TaskContext`]; pass it along with your own writes to
//!   fence them too.
//! - The replica that started a run **owns** it: it drives the task's stream on its executor
//!   and holds a **lease** on the key, renewed by its writes. A replica that dies loses its keys
//!   as [`Outcome::Lost`]; a replica that cannot renew in time **demotes itself** (the run's
//!   signal fires with [`lease_lost`]) before Redis could give its key away.
//! - Listeners and streams receive the in-process [`Event`]s, from every replica: a `State`
//!   (a run starting, each snapshot item, a run's end, a resynchronisation) or a `Delta` (an
//!   item folded into the progress), each at its [`Position`] (the run, and the sequence within
//!   it). Tasks yield snapshots or [`Delta`]s, plain or in a `Result`, as in-process.
//!
//! # Example
//!
//! Two replicas (in one process here; in a service, one per process) on a private Redis:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use futures::stream;
//! use keyrunner_redis::testing::RedisServer;
//! use keyrunner_redis::{ClusterRepository, Outcome, Reason, StateNode};
//!
//! type Agents = ClusterRepository<String, String, String>;
//!
//! let redis = RedisServer::start(); // a private redis-server, for this example
//! let here: Agents = ClusterRepository::builder(redis.url()).connect().await?;
//! let there: Agents = ClusterRepository::builder(redis.url()).connect().await?;
//!
//! let key = "conversation-42".to_owned();
//! let reply = match here.state_node(key.clone()).await? {
//!     StateNode::Idle(idle) => idle
//!         .run(|_cx| stream::pending::<String>())
//!         .await
//!         .expect("nobody runs it"),
//!     StateNode::Running(_) => unreachable!("a fresh key is idle"),
//! };
//!
//! // The other replica cannot run it too, but it can stop it.
//! assert!(there.run(key.clone(), |_cx| stream::empty::<String>()).await.unwrap_err().is_busy());
//! there.stop(&key, Reason::from("user pressed stop")).await?;
//! assert_eq!(reply.await, Outcome::Stopped { reason: Some(Reason::from("user pressed stop")) });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Guarantees
//!
//! Each is tested against a real Redis, most also under real faults by a multi-process suite
//! (`kill -9`, `SIGSTOP`, `CLIENT KILL`, Redis restarted and paused); docs/distributed.md lists
//! every test.
//!
//! - **D1 One run per key, cluster-wide.** Starting is one atomic script that checks the key is
//!   idle and issues a fence: of N replicas racing, exactly one wins; the others get
//!   [`RunError::Busy`] with the winner's run id.
//! - **D2 Fenced writes.** Every write of an owner carries its fence and is checked in Redis,
//!   with its lease deadline: a stopped, replaced or reaped run changes nothing afterwards, and
//!   no listener anywhere sees its items. Fences strictly increase per key, also across a Redis
//!   restart that lost the data (as long as Redis's clock does not step back).
//! - **D3 Stop from anywhere.** A stop on any replica makes the key idle with `Stopped` for every
//!   replica as soon as it returns; the owner's signal fires within one round trip (within TTL/3
//!   if the notification is lost) and its stream is dropped.
//! - **D4 Crash detection.** A dead owner's key is idle with [`Outcome::Lost`] within
//!   TTL + TTL/4 (+ one round trip) of its last renewal, and runs elsewhere with a larger fence.
//!   An owner that cannot renew demotes itself before Redis could give the key away; a renewal
//!   arriving late revives nothing.
//! - **D5 Ordered observation.** A listener sees each key's transitions in order, without
//!   duplicates, never going back. After a disconnection it resynchronises from the stored
//!   state: it may skip intermediate progress, never the latest state (the in-process
//!   `listen` sees every transition).
//! - **D6 Engine restarts.** Replicas reconnect and resubscribe by themselves; leases that ran
//!   out meanwhile are reaped; with AOF (`appendfsync always`) no accepted run is forgotten;
//!   without persistence the loss is detected (an epoch) and every local run ends `Lost`.
//! - **D7 Bounded memory.** Idle keys expire from Redis after the retention; a replica keeps
//!   nothing for a key nobody on it holds.
//! - **D8 Bad input and faults.** Redis unreachable → a typed [`Error`], the task not started;
//!   a slow listener never blocks an owner; foreign or corrupt data → typed errors. Nothing is
//!   lost silently.
//!
//! # Compared with the in-process repository
//!
//! - Everything that consults Redis is `async` and can fail with a typed [`Error`].
//! - After a disconnection a listener resynchronises from the stored state: it may skip
//!   intermediate events, never the latest state. The in-process `listen` sees every event.
//! - A run's id is its fence: a large number (server microseconds), not a small counter.
//! - A run may end [`Outcome::Lost`] because its owner died or lost its lease.
//! - Spawners take this crate's [`Driver`]; the default spawner is the runtime's own.
//!
//! # Features
//!
//! - `tokio` (default): Redis connections, timers and the default spawner on the tokio runtime
//!   current when the repository connects.
//! - `smol`: the same on smol. With both, a repository connected inside a tokio runtime uses
//!   tokio.
//! - `audit`: every accepted write is also appended to the namespace's audit list (for tests:
//!   it grows without bound).
//! - `test-util`: [`testing::RedisServer`], a private `redis-server` per test.
//!
//! # Compared with the alternatives
//!
//! - **`SET key token NX PX ttl` + `PUBLISH` + a compare-and-delete script.** The usual
//!   hand-roll (`benches/benches/peers/redis.rs`). It has no fence (a paused owner resumes and
//!   publishes over its successor), no way to tell "stopped" from "crashed", listeners that miss
//!   whatever was published while they reconnected, and a round trip per progress item.
//! - **A job queue (Sidekiq-style, or Redis streams with consumer groups).** At-least-once
//!   delivery of work, not "at most one live run per key that anyone can watch and stop".
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod error;
mod item;
mod layout;
mod lua;
mod observe;
mod repository;
mod run;
mod runtime;
mod store;
mod watch;
mod wire;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

pub use error::{Error, ErrorKind, RunError, StopError};
pub use item::IntoProgress;
pub use observe::{EventStream, STREAM_CAPACITY, Subscription};
pub use repository::{
    Builder, ClusterRepository, DEFAULT_LEASE_TTL, DEFAULT_NAMESPACE, DEFAULT_RETENTION, IdleNode,
    RunningNode, Shutdown, StateNode,
};
pub use run::{Driver, RunHandle, lease_lost};

#[doc(no_inline)]
pub use keyrunner_task_runner_repository::{
    AbortController, AbortSignal, Accumulate, Conflict, Delta, Event, NoError, Outcome, Position,
    Reason, RunId, State, TaskContext, progress,
};
