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
//! - **One value per allocation lifetime.** The initializer runs on the first allocation of a
//!   key; every lease of the key shares that value until the entry is freed.
//! - **Counting and cleanup are one decision.** A key's lease count, the predicate's verdict and
//!   the removal happen in one critical section. A concurrent [`Registry::allocate`] or
//!   [`Registry::get`] never receives a value that is being removed, and an entry is never freed
//!   twice.
//! - **The predicate runs once per release to zero** (and once per unleased entry in each sweep),
//!   with the key and its value.
//! - **Kept entries stay.** An entry the predicate keeps remains allocated with no leases;
//!   allocating its key again returns the same value.
//! - **Callbacks run under the lock; values drop outside it.** The initializer, the predicate and
//!   the closure given to [`Registry::for_each`] must not call back into the registry. A value's
//!   `Drop` may.
//! - **Panics leave the registry usable.** A panicking initializer allocates nothing; an entry
//!   whose predicate panics stays allocated with no leases. The panic propagates to the caller of
//!   `allocate`, to the code dropping the lease, or to the caller of `sweep`. Nothing is poisoned.
//! - **Thread-safe.** [`Registry`] and [`Lease`] are `Send + Sync` when the key, the value and
//!   the hasher are (the value must be `Sync`, since leases share it); `Debug` never blocks.
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
mod registry;
mod sync;

pub use builder::Builder;
pub use lease::Lease;
pub use registry::Registry;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
