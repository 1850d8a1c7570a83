//! A multicast emitter that remembers its last value, with a latest-value `Stream` facade.
//!
//! Most users want the [`keyrunner`](https://docs.rs/keyrunner) crate, which re-exports this one.
//!
//! A [`Subject`] holds an optional last value and a list of listeners. [`Subject::next`] records
//! a value and calls every listener with a reference to it; [`Subject::listen`] registers a
//! listener and returns a [`Subscription`] guard that removes it when dropped;
//! [`Subject::last`] reads the last value; [`Subject::stream`] returns a [`SubjectStream`] that
//! follows the latest value.
//!
//! # Guarantees
//!
//! - **One total order.** Every listener sees the values of a subject in one total order: the
//!   order in which `next`/`update` recorded them, even when they are called concurrently from
//!   many threads. Values recorded by one thread keep that thread's order.
//! - **Breadth-first reentrancy.** A value recorded from inside a listener is delivered after
//!   the current value has reached every listener, never depth-first.
//! - **No lock is held while a listener runs.** A listener may call `next`, `update`, `listen`,
//!   `last`, `listener_count`, `stream` and drop a [`Subscription`] of the same subject.
//! - **Snapshot at start.** A value goes to the listeners registered when its delivery starts,
//!   in registration order. A listener added during a delivery does not receive that value
//!   (unless it asks for it with `immediate`); a listener removed during a delivery is not called
//!   after its removal returns (a removal made inside another subject's listener, which does not
//!   wait, guarantees this for every delivery that starts after it: see
//!   [who waits for whom](#who-waits-for-whom)).
//! - **By reference.** Listeners receive `&T`; no value is cloned per listener, and `T` needs
//!   `Clone` only for [`Subject::stream`].
//! - **Panics are contained, then resumed once.** A panicking listener neither poisons the
//!   subject nor keeps the other listeners from the value. The first panic caught by a delivering
//!   call resurfaces from that call (`next`, `update`, or `listen` with `immediate`), after the
//!   delivery finished and the subject was left consistent; later panics of the same call are
//!   dropped.
//! - **Latest-value stream.** A [`SubjectStream`] may skip intermediate values but never misses
//!   the latest one; it never makes the publisher wait and buffers nothing. It ends when every
//!   [`Subject`] handle is gone.
//! - **No allocation per value.** Each value is kept in one `Arc`, shared by `last`, the
//!   delivery and any replay. A new value is written into the allocation of the value it
//!   replaces when nobody else holds that one (no `last()` result, no stream reading it, no
//!   delivery or replay under way): a steady stream of values allocates nothing, and a value
//!   someone holds is never touched.
//!
//! # Who delivers
//!
//! One thread at a time calls a subject's listeners. A `next` made while nobody delivers
//! delivers on the calling thread, then keeps delivering whatever other threads recorded
//! meanwhile. A `next` made while another thread delivers (or from inside a listener) queues
//! the value and returns at once; so a value is not necessarily delivered when `next` returns,
//! and a thread that keeps being fed values keeps delivering them.
//!
//! Uncontended, a value costs two short critical sections of the subject's lock (one records
//! the value and takes the listeners, the other hands them back) and one reference-count
//! increment and decrement; no lock is held while a listener runs.
//!
//! # Who waits for whom
//!
//! Nothing a subject does waits, except removing a listener (dropping a [`Subscription`])
//! while another thread is delivering a value: then the removal waits until that value has
//! reached every listener, so that the removed listener is not running, and will not run,
//! once the removal returns. Two kinds of threads never wait there, because another thread
//! may be waiting for them:
//!
//! - the thread delivering that very value (a listener removing itself or another listener
//!   of the subject it delivers): the removal takes effect before the next call;
//! - a thread inside a listener of *any* subject, or inside a callback a layer marked with
//!   [`raw::callback_scope`] (pub-sub's initial values): the removal returns at once. The
//!   removed listener gets no value whose delivery starts after that; a delivery already under
//!   way on the other thread may still reach it once, if it had gone past the check.
//!
//! So no wait made by a subject can close a cycle: every thread it waits for is a delivering
//! thread, and a delivering thread never waits in a removal. Listeners must still not block on
//! a thread that removes a listener from outside any callback (as with a lock).
//!
//! # Rules for listeners
//!
//! - The closure given to [`Subject::update`] runs under the subject's lock: it must not call
//!   into the same subject.
//! - A listener that owns a clone of its own [`Subject`] keeps the subject open.
//!
//! # Examples
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use keyrunner_subject::Subject;
//!
//! let subject = Subject::new();
//! let log = Arc::new(Mutex::new(Vec::new()));
//!
//! // A listener that reacts to 1 by emitting 2: delivered breadth-first.
//! let (log_a, inner) = (Arc::clone(&log), subject.clone());
//! let _a = subject.listen(
//!     move |value: &u32| {
//!         log_a.lock().unwrap().push(("a", *value));
//!         if *value == 1 {
//!             inner.next(2);
//!         }
//!     },
//!     false,
//! );
//! let log_b = Arc::clone(&log);
//! let _b = subject.listen(move |value: &u32| log_b.lock().unwrap().push(("b", *value)), false);
//!
//! subject.next(1);
//! assert_eq!(*log.lock().unwrap(), [("a", 1), ("b", 1), ("a", 2), ("b", 2)]);
//! assert_eq!(subject.last().as_deref(), Some(&2));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod raw;
mod stream;
mod subject;
mod subscription;
mod sync;

pub use stream::SubjectStream;
pub use subject::Subject;
pub use subscription::Subscription;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
