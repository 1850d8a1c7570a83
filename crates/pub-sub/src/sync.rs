//! Concurrency primitives: `std` normally, `loom` when model checking (`--cfg loom`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
