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
//! - A key's [`State`] is `Idle { last, progress }` (the last run's [`Outcome`] and final
//!   progress) or `Running { run, progress }` (the progress so far).
//! - [`state_node`](TaskRunnerRepository::state_node) gives a [`StateNode`]: an [`IdleNode`] can
//!   only [`run`](IdleNode::run), a [`RunningNode`] can only [`stop`](RunningNode::stop), and
//!   both consume the node. [`run_with`](Controller::run_with) and
//!   [`stop`](Controller::stop) are the one-call forms.
//! - A task is a function of a [`TaskContext`] (the key, the run's id and an [`AbortSignal`])
//!   returning a [`Stream`](futures_core::Stream) of progress: snapshots `P`, or [`Delta`]s
//!   folded into the progress (`String` and `Vec<T>` out of the box, any type through
//!   [`Accumulate`]); either may come in a `Result<_, E>`.
//! - Watchers get [`Event`]s: a `State` replaces what they had, a `Delta` is appended. Each
//!   event has a [`Position`], usable as a Server-Sent Events id to resume a stream after a
//!   reconnect ([`stream_after`](Observer::stream_after)).
//! - The repository drives each task's stream on the executor it was given (a [`Spawn`]; a
//!   closure becomes one with [`spawn_fn`]); this crate knows no runtime.
//! - [`Observer`] can read and listen, nothing else; [`Controller`] can also act.
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
//! - **Ordered observation.** [`listen`](Observer::listen) delivers every event of a key in
//!   order (`Running(None) → progress … → Idle(outcome)`), to every listener in the same order,
//!   with no lock held: a listener may read, listen, run and stop from inside its callback.
//! - **Every delta, linear bytes.** A stream reads a run's deltas with its own cursor: a slow
//!   consumer still gets every delta in order; only one more than
//!   [`max_deltas`](Builder::max_deltas) behind gets one resync with the accumulated value.
//! - **Panics are contained.** A panic in the task function, its stream or its progress type is
//!   caught and ends the run as [`Outcome::Panicked`]; the key returns to idle and nothing is
//!   poisoned. (A progress type's fold made for a reader panics in that reader: see
//!   [`Accumulate`].)
//! - **No user code under a lock.** Listeners, wakers' wakes, abort callbacks, and the
//!   destructors, clones and folds of progress and errors all run with none of this crate's
//!   locks held, so any of them may call back into the repository. (Keys are hashed and
//!   compared under the key table's lock, as in any concurrent map.)
//! - **Graceful shutdown.** [`shutdown`](Controller::shutdown) refuses runs from the moment it
//!   is called, stops every run with a reason, ends every stream once it has yielded its key's
//!   final state, and resolves once every task stream has been dropped. Dropping the last
//!   handle does the same without waiting.
//!
//! # Memory
//!
//! A key that is idle and that nobody listens to, streams, or holds a [`RunHandle`] for is
//! **forgotten**: the repository keeps zero bytes for it, and its last outcome is gone. This
//! bounds memory by the keys in use, not the keys ever seen. To keep outcomes, hold what you need
//! (a handle, a listener, a stream) or turn on retention
//! ([`retain_for`](Builder::retain_for), [`retain_keys`](Builder::retain_keys)): idle keys' last
//! outcomes and final progress are then kept for a while, or up to a number of keys, after their
//! run ended. (A key whose own progress holds a handle of the repository or of its own runs is
//! never forgotten: see [`TaskRunnerRepository`], "Handles the repository holds".)
//!
//! # Example
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::LazyLock;
//!
//! use futures::{StreamExt, stream};
//! use keyrunner_task_runner_repository::{
//!     Delta, Outcome, Reason, StateNode, TaskRunnerRepository, spawn_fn,
//! };
//!
//! // One repository for the whole process. Here every run gets a thread; the `keyrunner`
//! // crate has tokio and smol spawners.
//! static AGENTS: LazyLock<TaskRunnerRepository<String, String>> = LazyLock::new(|| {
//!     TaskRunnerRepository::new(spawn_fn(|driver| {
//!         std::thread::spawn(move || futures::executor::block_on(driver));
//!     }))
//! });
//!
//! let key = "conversation-1".to_string();
//! let handle = match AGENTS.state_node(key.clone()) {
//!     StateNode::Idle(idle) => idle
//!         .run(|_cx| {
//!             // A reply that streams two tokens, then waits for more.
//!             stream::iter(["Hel", "lo"].map(|token| Delta(token.to_owned())))
//!                 .chain(stream::pending())
//!         })
//!         .expect("the key was idle"),
//!     StateNode::Running(_) => unreachable!(),
//! };
//!
//! // Somebody else decides the reply is no longer wanted.
//! AGENTS.stop(&key, Reason::from("user interrupted")).expect("it runs");
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
//!   `watch` also shows only the latest value, so watchers miss transitions and deltas.
//! - **tokio-util's `JoinMap`.** Keyed tasks with abort-by-key, but owned by one `&mut` holder:
//!   no shared observation, no state per key, no "at most one per key" rule, and tokio only.
//! - **tokio-util's `TaskTracker`.** Waits for a set of tasks to finish (like
//!   [`shutdown`](Controller::shutdown) here) but knows no keys and no states.
//!
//! # Features
//!
//! - `serde`: `Serialize` and `Deserialize` for [`State`], [`Outcome`], [`Event`],
//!   [`Position`], [`RunId`], [`Reason`] and [`NoError`], in a JSON form made for JavaScript
//!   clients: objects tagged by `"type"`, documented in `docs/wire-format.md`.
//! - `tracing`: each run is a [`tracing`](https://docs.rs/tracing) span, `run`, with fields
//!   `key` (the key's `Debug`) and `run` (its id as a number), and these events in it:
//!
//!   | event | level | fields |
//!   |---|---|---|
//!   | `run started` | INFO | |
//!   | `run progress` | TRACE | `seq`: the item's sequence number in the run |
//!   | `run completed` | INFO | `outcome = "completed"` |
//!   | `run stopped` | INFO | `outcome = "stopped"`, `reason` (absent without one) |
//!   | `run failed` | WARN | `outcome = "failed"`, `error` (the error's `Debug`) |
//!   | `run panicked` | ERROR | `outcome = "panicked"`, `panic` (the message, if a string) |
//!   | `run lost: …` | WARN | `outcome = "lost"` |
//!
//!   The start is recorded before `run` returns; the end once the task's stream has been
//!   dropped, before the run's handles resolve. The driver enters the span whenever it polls the
//!   task, so whatever the task logs belongs to its run. The span has no parent — a run outlives
//!   the request that started it — but *follows from* the span current when `run` was called.
//!   Spans and events have the target `keyrunner_task_runner_repository`; targets match by
//!   prefix, so `RUST_LOG=keyrunner=info` selects them.
//!
//!   Keys and task errors implement `Debug` with or without this feature (the span records the
//!   key, a failure its error), so turning it on changes no bound and breaks no code elsewhere
//!   in a build. Without it nothing of `tracing` is compiled in: the hooks are empty and the run
//!   carries no span.
//!
//! # Panics
//!
//! A panicking listener never leaves a key half-changed. The other listeners still get the
//! event; the repository finishes its step (a stop still fires the signal and drops the stream,
//! a start still spawns its driver, a shutdown still stops every run, a replacement still
//! starts); then the first panic resumes from the call that made the change: `run`, `stop`,
//! `run_with` or `shutdown`, or — for changes the driver makes (progress, completion) — the
//! executor's poll that ends the run, so the run itself is never cut short by someone watching
//! it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod abort;
mod driver;
mod error;
mod event;
mod handle;
mod inner;
mod item;
mod log;
mod node;
mod observe;
mod panics;
mod repository;
mod retention;
mod run;
mod shutdown;
mod spawn;
mod state;
mod sync;
mod task;
mod trace;
mod wait;

pub use abort::{AbortCallback, AbortController, AbortSignal, WaitForAbort};
pub use error::{RunError, StopError};
pub use event::{Event, ParsePositionError, Position};
pub use handle::RunHandle;
pub use item::{Accumulate, Delta, IntoProgress, progress};
pub use node::{IdleNode, RunningNode, StateNode};
pub use observe::{EventStream, Subscription};
pub use repository::{
    Builder, Conflict, Controller, DEFAULT_MAX_DELTAS, Observer, TaskRunnerRepository,
};
pub use retention::{Clock, SystemClock};
pub use shutdown::Shutdown;
pub use spawn::{Driver, Spawn, SpawnFn, spawn_fn};
pub use state::{LastError, NoError, Outcome, Reason, RunId, State};
pub use task::TaskContext;

/// The bounds on type parameters, written once. Public so they may appear in public bounds,
/// in a private module so nobody outside can name (or implement) them.
mod bounds {
    use std::fmt::Debug;
    use std::hash::Hash;

    /// What a key must be: `Eq + Hash + Clone + Debug + Send + Sync + 'static`. `Debug` lets
    /// the `tracing` feature record the key; it is required with or without the feature, so
    /// turning the feature on never breaks code elsewhere in a build.
    pub trait Key: Eq + Hash + Clone + Debug + Send + Sync + 'static {}

    impl<T: Eq + Hash + Clone + Debug + Send + Sync + 'static> Key for T {}

    /// What progress and errors must be: `Send + Sync + 'static`.
    pub trait Value: Send + Sync + 'static {}

    impl<T: Send + Sync + 'static> Value for T {}

    /// What a task's error must be to start a run: a [`Value`] and `Debug` (the `tracing`
    /// feature records a failure's error; required with or without it, as for keys).
    pub trait Error: Value + Debug {}

    impl<T: Value + Debug> Error for T {}
}
