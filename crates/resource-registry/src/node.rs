//! One allocated key: its hash, the key, the value once made, and the counters that decide when
//! it is freed. A node is the registry's only allocation per key.

use std::sync::OnceLock;

use crate::sync::{self, AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, ThreadId};

/// The initializer is running.
const INIT: u8 = 0;
/// The value is made.
const READY: u8 = 1;
/// The initializer panicked; the node left the table.
const FAILED: u8 = 2;
/// The phase bits.
const PHASE: u8 = 0b11;
/// Someone waits (on the registry's condition variable) for the initializer to finish.
const WAITING: u8 = 0b100;

/// Where a node's initialization stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Init,
    Ready,
    Failed,
}

pub(crate) struct Node<K, V> {
    /// The key's hash, computed once with the registry's hasher.
    pub(crate) hash: u64,
    pub(crate) key: K,
    /// Set once, by the thread that created the node, outside the registry lock.
    value: OnceLock<V>,
    /// Live leases, plus callers waiting for the value. It rises from zero only under the
    /// registry lock (a lookup), from one or more also without it (a lease is cloned); it falls
    /// to zero only under the lock, so every release to zero is seen by the lock's holders.
    pub(crate) leases: AtomicUsize,
    /// Releases to zero so far. Changed only under the lock: a cleanup decision taken while the
    /// lock was released applies only if no other release to zero came in between.
    pub(crate) releases: AtomicU64,
    /// The [`Phase`], plus [`WAITING`].
    phase: AtomicU8,
    /// Whether the node is in the table; cleared under the lock when it is removed.
    linked: AtomicBool,
    /// The thread running the initializer: the one that created the node.
    owner: ThreadId,
}

impl<K, V> Node<K, V> {
    /// A node for `key`, leased once by its creator, which will run the initializer.
    pub(crate) fn new(hash: u64, key: K) -> Self {
        Self {
            hash,
            key,
            value: OnceLock::new(),
            leases: AtomicUsize::new(1),
            releases: AtomicU64::new(0),
            phase: AtomicU8::new(INIT),
            linked: AtomicBool::new(true),
            owner: sync::current_thread(),
        }
    }

    /// The value. Callers hold a lease on a node whose phase they saw `Ready`, or run the cleanup
    /// predicate of such a node.
    pub(crate) fn value(&self) -> &V {
        self.value
            .get()
            .expect("a node is leased or judged only once its value is made")
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) & PHASE {
            INIT => Phase::Init,
            READY => Phase::Ready,
            _ => Phase::Failed,
        }
    }

    /// Whether the calling thread is the one running this node's initializer.
    pub(crate) fn initialized_by_caller(&self) -> bool {
        self.owner == sync::current_thread()
    }

    /// Makes the value with `init`, lets `create` change it (still private) and return
    /// something for its caller, and makes the value visible; returns whether someone waits to
    /// be told, and what `create` returned. If either panics, nothing is stored and the panic
    /// propagates.
    pub(crate) fn initialize<R>(
        &self,
        init: impl FnOnce(&K) -> V,
        create: impl FnOnce(&K, &mut V) -> R,
    ) -> (bool, R) {
        let mut made = None;
        self.value.get_or_init(|| {
            let mut value = init(&self.key);
            made = Some(create(&self.key, &mut value));
            value
        });
        // Only the node's creator calls this, once, on a cell nobody else sets: the closure ran.
        let made = made.expect("the creator of a node initializes its empty cell");
        (
            self.phase.swap(READY, Ordering::AcqRel) & WAITING != 0,
            made,
        )
    }

    /// Marks the initialization failed; returns whether someone waits to be told.
    pub(crate) fn fail(&self) -> bool {
        self.phase.swap(FAILED, Ordering::AcqRel) & WAITING != 0
    }

    /// Announces a waiter, under the registry lock, before it waits on the condition variable;
    /// returns the phase seen at that moment. Both this and the swap in [`publish`](Self::publish)
    /// or [`fail`](Self::fail) modify `phase`, so one of them sees the other: a waiter either
    /// finds the phase changed or is woken by the notification that follows the change.
    pub(crate) fn announce_waiter(&self) -> Phase {
        match self.phase.fetch_or(WAITING, Ordering::AcqRel) & PHASE {
            INIT => Phase::Init,
            READY => Phase::Ready,
            _ => Phase::Failed,
        }
    }

    /// Clears the linked flag, under the registry lock; returns whether it was set.
    pub(crate) fn unlink(&self) -> bool {
        let linked = self.linked.load(Ordering::Relaxed);
        self.linked.store(false, Ordering::Relaxed);
        linked
    }
}
