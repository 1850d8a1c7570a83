//! keyrunner across replicas, on Redis: at most one task per key **cluster-wide**, stop from
//! any replica, and every replica's listeners see every key's transitions.
//!
//! Most users want the [`keyrunner`](https://docs.rs/keyrunner) crate with its `redis` feature,
//! which re-exports this one as `keyrunner::redis`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod compat;
mod context;
mod error;
mod layout;
mod lua;
mod observe;
mod repository;
mod run;
mod runtime;
mod store;
mod transition;
mod watch;

pub use context::TaskContext;
pub use error::{Error, ErrorKind, RunError, StopError};
pub use observe::{STREAM_CAPACITY, StateStream, Subscription};
pub use repository::{
    Builder, ClusterRepository, DEFAULT_LEASE_TTL, DEFAULT_NAMESPACE, DEFAULT_RETENTION, IdleNode,
    RunningNode, Shutdown, StateNode,
};
pub use run::{RunHandle, lease_lost};
pub use transition::Transition;

#[doc(no_inline)]
pub use keyrunner_task_runner_repository::{
    AbortController, AbortSignal, BoxFuture, Conflict, Outcome, Reason, RunId, Spawn, State,
};
