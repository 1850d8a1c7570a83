//! Keyed, reference-counted, thread-safe resources with a cleanup predicate.
//!
//! Most users want the [`keyrunner`](https://docs.rs/keyrunner) crate, which re-exports this one.
//!
//! A [`Registry`] holds one value per key for as long as someone uses it.
//! [`Registry::allocate`] hands out a [`Lease`], an RAII guard that dereferences to the key's
//! value; the registry's initializer creates the value on the key's first allocation. When the
//! last lease of a key is dropped, the registry's cleanup predicate decides whether the entry is
//! freed (the default) or kept, unleased, until a later release or [`Registry::sweep`].
//!
//! # Guarantees
//!
//! - **One value per allocation lifetime.** The initializer runs once, on the first allocation
//!   of a key; every lease of the key shares that value until the entry is freed.
//! - **Counting and cleanup cannot be split.** A concurrent [`Registry::allocate`] or
//!   [`Registry::get`] never receives a value that is being removed, and an entry is never freed
//!   twice: the entry is removed only if it is still unleased when the predicate's answer comes
//!   back, and no other release to zero came in between.
//! - **The predicate runs exactly once per release to zero** (and once per unleased entry in
//!   each sweep), with the key and its value. A key leased again while its predicate runs stays
//!   allocated, whatever the answer; its next release to zero asks again.
//! - **Kept entries stay.** An entry the predicate keeps remains allocated with no leases;
//!   allocating its key again returns the same value.
//! - **Callbacks may call back.** The initializer, the cleanup predicate and the closures given
//!   to [`Registry::peek`] and [`Registry::for_each`] run without the registry's lock. They may
//!   read the registry (`is_allocated`, `len`, `get`, `peek`) and allocate, lease or release
//!   other keys. An initializer that leases its own key (`allocate`, `get`, `entry`, `peek`)
//!   panics with a message that says so: its value cannot exist before it returns. The creation
//!   hook of [`Registry::allocate_with`] is part of the initializer in all of this. A
//!   predicate may even lease the key it judges, which keeps it. Values are dropped without the
//!   lock too.
//! - **Panics leave the registry usable.** A panicking initializer allocates nothing; an entry
//!   whose predicate panics stays allocated with no leases. The panic propagates to the caller of
//!   `allocate`, to the code dropping the lease, or to the caller of `sweep`. Nothing is poisoned.
//! - **One hash per operation.** A key is hashed once per `allocate`, `allocate_with`, `get`,
//!   `entry`, `peek` or `is_allocated`, with the registry's hasher; the entry keeps the hash, so releasing a lease
//!   (and freeing the entry) never hashes. Cloning a lease, and dropping one that is not the
//!   last, take no lock.
//! - **Thread-safe.** [`Registry`] and [`Lease`] are `Send + Sync` when the key, the value and
//!   the hasher are (the value must be `Sync`, since leases share it); `Debug` never blocks.
//!
//! # Who waits for whom
//!
//! The registry's lock is held only to look a key up, count a lease, or insert or remove an
//! entry; no user code runs under it except the key's `Eq`. Nobody waits for a cleanup
//! predicate. The one wait is for an initializer: while a key's value is being created, other
//! callers of **that key** that need its value (`allocate`, `get`, `entry`, `peek`, and
//! `for_each` when it reaches the key) wait for it, and then share the value it made (or, if it
//! panicked, look again and may make one themselves). Callers of other keys never wait, and
//! neither do `is_allocated` and `len`.
//!
//! So a wait can only be part of a cycle if initializers wait for each other: an initializer
//! of `a` that needs key `b` while the initializer of `b`, on another thread, needs key `a`
//! deadlocks, as two `OnceLock`s initialized from each other would. An initializer must also not
//! wait for a thread that may be waiting for its key.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use keyrunner_resource_registry::Registry;
//!
//! // One message counter per chat, kept while it has counted something.
//! let chats = Registry::builder(|_chat: &String| AtomicUsize::new(0))
//!     .cleanup(|_chat, count| count.load(Ordering::Relaxed) == 0)
//!     .build();
//!
//! let idle = chats.allocate("general".to_owned());
//! drop(idle);
//! assert!(!chats.is_allocated("general")); // never counted anything: freed
//!
//! let busy = chats.allocate("random".to_owned());
//! busy.fetch_add(1, Ordering::Relaxed);
//! drop(busy);
//! assert!(chats.is_allocated("random")); // kept by the predicate, with no lease
//!
//! let again = chats.get("random").expect("kept entries can be leased again");
//! assert_eq!(again.load(Ordering::Relaxed), 1); // the same value as before
//! again.store(0, Ordering::Relaxed);
//! drop(again);
//! assert!(chats.is_empty());
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod lease;
mod node;
mod registry;
mod sync;
mod table;

pub use builder::Builder;
pub use lease::Lease;
pub use registry::{Entry, Registry, VacantEntry};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
