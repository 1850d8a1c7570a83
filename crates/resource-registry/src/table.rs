//! The map behind the lock: a set of nodes, each found by the hash stored in it.
//!
//! A key is hashed once, with the registry's hasher, when a caller names it; the node keeps that
//! hash, so inserting and removing a node never hashes its key again. The set itself hashes with
//! [`StoredHash`], which only passes the stored number on. Lookups by a borrowed key go through
//! `dyn Probe<Q>`, the usual way to look a `HashSet` up by something that is not its element;
//! a removal probes with the node itself, which hashes and compares as its link does.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::node::Node;
use crate::sync::Arc;

/// The nodes of every allocated key (being initialized, leased, or kept).
pub(crate) struct Table<K, V> {
    set: HashSet<Link<K, V>, BuildHasherDefault<StoredHash>>,
}

/// A node as an element of the set: hashed by its stored hash, equal by key.
struct Link<K, V>(Arc<Node<K, V>>);

/// Something that can be compared with a node: a hash and a key.
trait Probe<Q: ?Sized> {
    fn hash(&self) -> u64;
    fn key(&self) -> &Q;
}

/// A lookup: a key the caller named and its hash.
struct Lookup<'q, Q: ?Sized> {
    hash: u64,
    key: &'q Q,
}

impl<K, V> Table<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            set: HashSet::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.set.capacity()
    }

    pub(crate) fn shrink_to_fit(&mut self)
    where
        K: Eq,
    {
        self.set.shrink_to_fit();
    }

    /// Every node, in no particular order.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Arc<Node<K, V>>> {
        self.set.iter().map(|link| &link.0)
    }

    /// The node of `key`, whose hash is `hash`.
    pub(crate) fn get<Q>(&self, hash: u64, key: &Q) -> Option<&Arc<Node<K, V>>>
    where
        K: Borrow<Q> + Eq,
        Q: ?Sized + Eq,
    {
        let lookup = Lookup { hash, key };
        self.set.get(&lookup as &dyn Probe<Q>).map(|link| &link.0)
    }

    /// Adds `node`, whose key has no node yet.
    pub(crate) fn insert(&mut self, node: Arc<Node<K, V>>)
    where
        K: Eq,
    {
        let inserted = self.set.insert(Link(node));
        debug_assert!(inserted, "a key has at most one node");
    }

    /// Removes `node`, if it is still the node of its key; returns it, to be dropped once the
    /// lock is released.
    pub(crate) fn unlink(&mut self, node: &Node<K, V>) -> Option<Arc<Node<K, V>>>
    where
        K: Eq,
    {
        if !node.unlink() {
            return None;
        }
        // Probed by the node itself: its stored hash and key, without a trait object.
        let removed = self.set.take(node).map(|link| link.0);
        debug_assert!(removed.is_some(), "a linked node is in the table");
        removed
    }
}

impl<K, V> Hash for Link<K, V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl<K: Eq, V> PartialEq for Link<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl<K: Eq, V> Eq for Link<K, V> {}

impl<K, V> Borrow<Node<K, V>> for Link<K, V> {
    fn borrow(&self) -> &Node<K, V> {
        &self.0
    }
}

/// A node hashes and compares as its link does: by its stored hash, and by key.
impl<K, V> Hash for Node<K, V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: Eq, V> PartialEq for Node<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<K: Eq, V> Eq for Node<K, V> {}

impl<K: Borrow<Q>, V, Q: ?Sized> Probe<Q> for Link<K, V> {
    fn hash(&self) -> u64 {
        self.0.hash
    }

    fn key(&self) -> &Q {
        self.0.key.borrow()
    }
}

impl<Q: ?Sized> Probe<Q> for Lookup<'_, Q> {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn key(&self) -> &Q {
        self.key
    }
}

impl<'a, K: Borrow<Q> + 'a, V: 'a, Q: ?Sized + 'a> Borrow<dyn Probe<Q> + 'a> for Link<K, V> {
    fn borrow(&self) -> &(dyn Probe<Q> + 'a) {
        self
    }
}

impl<Q: ?Sized> Hash for dyn Probe<Q> + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(Probe::hash(self));
    }
}

impl<Q: ?Sized + Eq> PartialEq for dyn Probe<Q> + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<Q: ?Sized + Eq> Eq for dyn Probe<Q> + '_ {}

/// Passes a stored hash through: the only number it is given is a node's or a lookup's hash.
#[derive(Default)]
pub(crate) struct StoredHash(u64);

impl Hasher for StoredHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    /// Never called: elements and probes hash with `write_u64` only. Mixes the bytes in anyway,
    /// so that a caller other than this module still gets a usable hash.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}
