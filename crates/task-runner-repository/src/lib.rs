//! A repository of per-key task runners: each key runs at most one streaming task, anyone can
//! watch a key's state live, and the type system makes "check idle, then run" and "check
//! running, then stop" the only way to act.
//!
//! Most users want the [`keyrunner`](https://docs.rs/keyrunner) crate, which re-exports this one
//! together with ready spawners for tokio and smol.
//!
//! # Concepts
//!
//! - A [`TaskRunnerRepository`] is created once — typically a `static` behind
//!   [`LazyLock`](std::sync::LazyLock) — and holds one runner per key.
//! - A key's [`State`] is `Idle { last }` (with the last run's [`Outcome`]) or
//!   `Running { run, progress }` (with the task's last item).
//! - [`state_node`](TaskRunnerRepository::state_node) gives a [`StateNode`]: an [`IdleNode`] can
//!   only [`run`](IdleNode::run), a [`RunningNode`] can only [`stop`](RunningNode::stop), and
//!   both consume the node.
//! - A task is a function of a [`TaskContext`] (the key and an [`AbortSignal`]) returning a
//!   [`Stream`](futures_core::Stream) of progress: plain `S` items or `Result<S, E>`.
//! - The repository drives each task's stream on the executor it was given (a [`Spawn`]); this
//!   crate knows no runtime.
//!
//! # Guarantees
//!
//! - **Linearizable runs.** `run` succeeds iff the key is idle at that instant. Of two racing
//!   runs on one key exactly one wins; the other gets [`RunError::Busy`] with its task back.
//! - **Exact stops.** [`RunningNode::stop`] stops the very run the node saw. A stale node — its
//!   run ended, maybe a later run holds the key — gets [`StopError`] and changes nothing.
//! - **Stops are prompt.** The key is idle as soon as `stop` returns, the run's
//!   [`AbortSignal`] fires exactly once, and the stream is dropped on its executor at its next
//!   poll. The [`RunHandle`] resolves once it has been dropped.
//! - **No stale completions.** Items, errors, completion or panics of a run that was stopped or
//!   superseded are discarded: they never change a later run's state.
//! - **One outcome.** Every run ends with exactly one [`Outcome`] — completed, stopped, failed,
//!   panicked or lost — and the handle, the state and every listener agree on it.
//! - **Ordered observation.** [`listen`](TaskRunnerRepository::listen) delivers every transition
//!   of a key in order (`Idle → Running(None) → Running(Some) … → Idle(outcome)`), to every
//!   listener in the same order, with no lock held: a listener may read, listen, run and stop
//!   from inside its callback.
//! - **Panics are contained.** A panic in the task function or its stream is caught and ends
//!   the run as [`Outcome::Panicked`]; the key returns to idle and nothing is poisoned.
//! - **Capabilities.** [`Observer`] can read and listen, never act; [`Controller`] can act.
//! - **Graceful shutdown.** [`shutdown`](TaskRunnerRepository::shutdown) stops every run with a
//!   reason, refuses later runs with [`RunError::ShutDown`], and resolves once every stream has
//!   been dropped.
//!
//! # Memory
//!
//! A key that is idle, has no listener, and no [`RunHandle`] is **forgotten**: the repository
//! keeps zero bytes for it, and its last outcome is gone. This bounds memory by the keys in use,
//! not the keys ever seen. To keep an outcome, hold what you need: a handle (await it), a
//! listener, or a stream. Nothing is lost behind your back: if nobody holds the key, nobody was
//! going to read the outcome.
//!
//! # Example
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::LazyLock;
//!
//! use futures::stream;
//! use keyrunner_task_runner_repository::{
//!     BoxFuture, Outcome, Reason, StateNode, TaskRunnerRepository,
//! };
//!
//! // One repository for the whole process. Here every run gets a thread; the `keyrunner`
//! // crate has tokio and smol spawners.
//! static AGENTS: LazyLock<TaskRunnerRepository<String, String>> = LazyLock::new(|| {
//!     TaskRunnerRepository::new(|future: BoxFuture| {
//!         std::thread::spawn(move || futures::executor::block_on(future));
//!     })
//! });
//!
//! let key = "conversation-1".to_string();
//! let handle = match AGENTS.state_node(key.clone()) {
//!     StateNode::Idle(idle) => idle
//!         .run(|_cx| stream::pending::<String>())
//!         .expect("the key was idle"),
//!     StateNode::Running(_) => unreachable!(),
//! };
//!
//! // Somebody else decides the reply is no longer wanted.
//! if let StateNode::Running(running) = AGENTS.state_node(key.clone()) {
//!     running.stop(Reason::from("user interrupted")).expect("it is still that run");
//! }
//! assert_eq!(
//!     handle.await,
//!     Outcome::Stopped { reason: Some(Reason::from("user interrupted")) },
//! );
//! # });
//! ```
//!
//! # Compared with the alternatives
//!
//! - **A locked map of `CancellationToken`s and `tokio::sync::watch` channels.** The usual
//!   hand-roll. Its classic bugs are the ones this crate rules out by construction: a check and
//!   an act that are not atomic (two runs on one key), a stop that cancels a *later* run, a late
//!   completion of a cancelled task overwriting the new run's state, map entries never removed.
//!   `watch` also shows only the latest value, so listeners miss transitions.
//! - **tokio-util's `JoinMap`.** Keyed tasks with abort-by-key, but owned by one `&mut` holder:
//!   no shared observation, no state per key, no "at most one per key" rule, and tokio only.
//! - **tokio-util's `TaskTracker`.** Waits for a set of tasks to finish (like
//!   [`shutdown`](TaskRunnerRepository::shutdown) here) but knows no keys and no states.
//!
//! # Panics
//!
//! A panicking listener never leaves a key half-changed. The other listeners still get the
//! transition; the repository finishes its step (a stop still fires the signal and drops the
//! stream, a start still spawns its driver, a shutdown still stops every run); then the first
//! panic resumes from the call that made the transition: `run`, `stop` or `shutdown`, or — for
//! transitions the driver makes (progress, completion) — the executor's poll that ends the run,
//! so the run itself is never cut short by someone watching it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod abort;
mod error;
mod notify;
mod observe;
mod panics;
mod repository;
mod run;
mod shutdown;
mod spawn;
mod state;
mod sync;
mod task;

pub use abort::{AbortCallback, AbortController, AbortSignal, Aborted};
pub use error::{RunError, SpawnError, StopError};
pub use observe::{STREAM_CAPACITY, StateStream, Subscription};
pub use repository::{
    Conflict, Controller, IdleNode, Observer, RunningNode, StateNode, TaskRunnerRepository,
};
pub use run::RunHandle;
pub use shutdown::Shutdown;
pub use spawn::{BoxFuture, Spawn};
pub use state::{LastError, Outcome, Reason, RunId, State};
pub use task::{IntoProgress, TaskContext, progress};
