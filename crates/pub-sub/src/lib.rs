//! Keyed subjects living in a resource registry: one multicast topic per key, alive while held.
//!
//! Most users want the [`keyrunner`](https://docs.rs/keyrunner) crate, which re-exports this one.
//!
//! A [`PubSub`] maps keys to topics. A topic is a [`Subject`]: it remembers its last value and
//! delivers every new value to its listeners. Topics live in a
//! [`Registry`]: a key is *allocated* while someone holds it
//! (a [`Subscription`], a [`Topic`] or a [`TopicStream`]) and forgotten when the last holder
//! leaves, unless a cleanup predicate keeps it.
//!
//! # Guarantees
//!
//! - **Held keys stay allocated.** Every [`Subscription`], [`Topic`] and [`TopicStream`] holds a
//!   lease on its key; while one lives, the key stays allocated and all of them share one
//!   subject. When the last one is dropped, the key is freed unless
//!   [`should_cleanup`](Builder::should_cleanup)`(key, last)` returns `false`; a kept key is
//!   freed by a later release or [`sweep`](PubSub::sweep) once the predicate returns `true`.
//!   A topic that never emitted is always freed, without asking the predicate. Dropping one
//!   holder never frees a key another holder still holds.
//! - **Emitting to nobody is free.** [`next`](PubSub::next) to a key that is not allocated, whose
//!   topic would be freed right away anyway (no predicate, or the predicate returns `true` for
//!   `(key, value)`), costs one lookup, allocates nothing and drops the value.
//! - **Per key, the subject's guarantees.** Listeners of one key see its values in one total
//!   order, even with concurrent or reentrant emissions (a nested emission is delivered after the
//!   current value reached every listener). Values are delivered by reference. Keys are
//!   independent of each other.
//! - **No lock is held while a listener runs**, neither the registry's nor the subject's: a
//!   listener may call any method of this `PubSub` or of a [`Topic`], for its own key or any
//!   other, including [`listen`](PubSub::listen) and [`next`](PubSub::next).
//! - **Panics.** A panicking listener does not stop the other listeners of the key from
//!   receiving the value and poisons nothing; the first panic of a delivery resumes from the call
//!   that was delivering ([`PubSub::next`], [`Topic::next`], [`Topic::update`], or an
//!   `immediate` [`listen`](PubSub::listen)) once the delivery is done.
//! - **Callbacks may call back.** [`initial_value`](Builder::initial_value) and
//!   [`should_cleanup`](Builder::should_cleanup) run without any lock: they may read this
//!   `PubSub` (`is_allocated`, `len`, `last`, `topic_if_allocated`) and listen to, publish to or
//!   release other keys. An `initial_value` that uses its own key panics with a message that
//!   says so (the topic does not exist until it returns). Only the closure of [`Topic::update`]
//!   runs under a lock (its topic's): it must not call back into that topic.
//! - **One allocation, one hash.** Listening to a fresh key allocates one block (the topic's
//!   subject lives inside the registry's entry for the key; a capture-less listener needs no
//!   block of its own) and hashes the key once; unsubscribing hashes nothing.
//! - **The predicate is asked once per release to zero.** `next` to a key nobody holds asks
//!   it once, before allocating anything; should another value be emitted while its momentary
//!   hold lasts, its release asks again, about that value.
//!
//! # Who waits for whom
//!
//! Callers of a key whose `initial_value` is running wait for it (and share the topic it
//! starts); callers of other keys never do, and nobody waits for `should_cleanup`. Removing a
//! listener waits for a value being delivered on another thread, except from inside a
//! listener or an `initial_value`; see
//! [the subject's rules](keyrunner_subject#who-waits-for-whom). So no wait can close a cycle,
//! unless `initial_value`s need each other's keys from two threads at once (as two `OnceLock`s
//! initialized from each other would).
//!
//! # Examples
//!
//! ```
//! use keyrunner_pub_sub::PubSub;
//! use std::sync::{Arc, Mutex};
//!
//! // Replies streamed per conversation; a conversation that ended in an error is remembered.
//! let replies = PubSub::<String, Result<String, String>>::builder()
//!     .should_cleanup(|_conversation, last| last.is_ok())
//!     .build();
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = Arc::clone(&seen);
//! let subscription = replies.listen(
//!     "chat-1".to_owned(),
//!     move |reply: &Result<String, String>| sink.lock().unwrap().push(reply.clone()),
//!     false,
//! );
//!
//! replies.next("chat-1".to_owned(), Ok("Hel".to_owned()));
//! replies.next("chat-1".to_owned(), Ok("Hello".to_owned()));
//! replies.next("chat-2".to_owned(), Ok("unheard".to_owned())); // not allocated: dropped
//! assert_eq!(seen.lock().unwrap().len(), 2);
//! assert!(!replies.is_allocated("chat-2"));
//!
//! drop(subscription); // last holder of chat-1, whose last reply is fine: forgotten
//! assert!(replies.is_empty());
//!
//! replies.next("chat-3".to_owned(), Err("rate limited".to_owned())); // kept
//! assert_eq!(
//!     replies.last(&"chat-3".to_owned()).as_deref(),
//!     Some(&Err("rate limited".to_owned())),
//! );
//! ```
//!
//! [`Subject`]: keyrunner_subject::Subject
//! [`Registry`]: keyrunner_resource_registry::Registry

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod pubsub;
mod topic;

pub use pubsub::{Builder, PubSub};
pub use topic::{Subscription, Topic, TopicStream};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
