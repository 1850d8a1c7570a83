//! A process-wide repository of per-key task runners: at most one streaming task per key, its
//! state observable live, and "run" and "stop" checked by the type system.
//!
//! keyrunner is for services that run long, streaming jobs per key — an AI agent streaming a
//! reply per conversation, a sync job per account, a build per branch. One
//! [`TaskRunnerRepository`] is created once and holds one runner per key. A runner runs **at most
//! one task at a time**: a task is a function of a [`TaskContext`] returning a
//! [`Stream`](https://docs.rs/futures-core/latest/futures_core/stream/trait.Stream.html) of
//! progress, driven on the executor you hand the repository.
//! Anyone can read a key's [`State`] and listen to its transitions; only an [`IdleNode`] can
//! [`run`](IdleNode::run) and only a [`RunningNode`] can [`stop`](RunningNode::stop), so the
//! compiler enforces "check before you act". Every run ends with exactly one [`Outcome`]:
//! completed, stopped (with your reason), failed (with the task's error), panicked, or lost.
//!
//! This crate only re-exports the layers below it and adds ready spawners for tokio and smol;
//! the guarantees are documented in [`task_runner_repository`].
//!
//! # Examples
//!
//! The singleton pattern: one `static` repository for the whole process. Here every run is
//! driven on a thread of its own — [`spawn_fn`] makes a [`Spawn`] of any closure; the
//! [features](#features) bring spawners for real executors.
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::LazyLock;
//!
//! use futures::stream;
//! use keyrunner::{Delta, Outcome, Reason, StateNode, TaskRunnerRepository, spawn_fn};
//!
//! /// One streaming agent per conversation; progress is the reply so far.
//! static AGENTS: LazyLock<TaskRunnerRepository<String, String>> = LazyLock::new(|| {
//!     TaskRunnerRepository::new(spawn_fn(|driver| {
//!         std::thread::spawn(move || futures::executor::block_on(driver));
//!     }))
//! });
//!
//! // Start a reply for "alice" if she has none going on. It streams tokens: deltas the
//! // repository folds into the reply so far.
//! let alice = "alice".to_string();
//! let reply = match AGENTS.state_node(alice.clone()) {
//!     StateNode::Idle(idle) => idle
//!         .run(|_cx| stream::iter(["Hel", "lo", "!"].map(|token| Delta(token.to_owned()))))
//!         .expect("alice was idle a moment ago and nobody else runs her"),
//!     StateNode::Running(running) => running.handle(),
//! };
//! let keep = reply.clone(); // a handle keeps alice's last outcome and reply remembered
//! assert_eq!(reply.await, Outcome::Completed);
//! let state = AGENTS.state(&alice);
//! assert_eq!(state.last_outcome(), Some(&Outcome::Completed));
//! assert_eq!(state.progress().map(String::as_str), Some("Hello!"));
//!
//! // A reply that never ends by itself, stopped by somebody else with a reason.
//! let bob = "bob".to_string();
//! let reply = AGENTS.run(bob.clone(), |_cx| stream::pending::<String>()).unwrap();
//! AGENTS.stop(&bob, Reason::from("user interrupted")).expect("bob runs");
//! assert_eq!(
//!     reply.await,
//!     Outcome::Stopped { reason: Some(Reason::from("user interrupted")) },
//! );
//! # drop(keep);
//! # });
//! ```
//!
//! # Features
//!
//! No feature is on by default; the core knows no runtime.
//!
//! - `tokio`: `keyrunner::tokio::TokioSpawner`, which spawns runs on a tokio runtime handle. A
//!   runtime that has shut down refuses new runs: `run` returns [`RunError::Spawn`].
//! - `smol`: `keyrunner::smol::SmolSpawner`, which spawns runs on smol's global executor or on
//!   an executor of your own.
//! - `serde`: `Serialize` and `Deserialize` for states, outcomes, events and positions, in a
//!   JSON form made for JavaScript clients (objects tagged by `"type"`; see
//!   `docs/wire-format.md`).
//! - `tracing`: a [`tracing`](https://docs.rs/tracing) span per run (its key and run id) and
//!   events for its start and end (INFO; WARN for a failure, ERROR for a panic) and each item
//!   (TRACE). Keys and task errors must then implement `Debug`. The spans, events and levels
//!   are listed in [`task_runner_repository`], "Features".
//!
//! Without `tokio` or `smol`, any closure that spawns a [`Driver`] is a spawner, through
//! [`spawn_fn`].
//!
//! # Crate map
//!
//! Each layer is a crate of its own, re-exported here as a module; the headline types of the
//! top layer are also at this crate's root.
//!
//! | module | what it is |
//! |---|---|
//! | [`task_runner_repository`] | the repository, its state nodes, run handles, abort signals, capabilities and shutdown |
//! | [`pub_sub`] | keyed subjects living in a resource registry: what holds every key's state |
//! | [`subject`] | a multicast emitter that remembers its last value, with ordered, reentrant delivery |
//! | [`resource_registry`] | keyed, reference-counted resources with a cleanup predicate |
//! | `tokio`, `smol` | ready spawners, behind the [features](#features) of the same name |
//!
//! # Memory
//!
//! A key that is idle, has no listener and no [`RunHandle`] is forgotten, with its last outcome:
//! memory is bounded by the keys in use. Hold a handle, a listener or a stream to keep an
//! outcome, or turn on retention ([`Builder::retain_for`], [`Builder::retain_keys`]); see
//! [`task_runner_repository`], "Memory".

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use keyrunner_pub_sub as pub_sub;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use keyrunner_redis as redis;
#[doc(inline)]
pub use keyrunner_resource_registry as resource_registry;
#[doc(inline)]
pub use keyrunner_subject as subject;
#[doc(inline)]
pub use keyrunner_task_runner_repository as task_runner_repository;

#[doc(no_inline)]
pub use keyrunner_task_runner_repository::{
    AbortCallback, AbortController, AbortSignal, Accumulate, Builder, Clock, Conflict, Controller,
    Delta, Driver, Event, EventStream, IdleNode, NoError, Observer, Outcome, Position, Reason,
    RunError, RunHandle, RunId, RunningNode, Shutdown, Spawn, State, StateNode, StopError,
    Subscription, TaskContext, TaskRunnerRepository, spawn_fn,
};

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub mod smol;

/// The README's example, compiled and run as a doctest so the front door stays true.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
