//! Opt-in retention of idle keys' last outcomes: [`Clock`] and the retained-key queue.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyrunner_pub_sub::Topic;

use crate::bounds::{Key, Value};
use crate::run::Slot;
use crate::state::RunId;
use crate::sync::{Mutex, lock};

/// The time retention measures against: [`SystemClock`] unless a test brings its own.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::{Duration, Instant};
///
/// use keyrunner_task_runner_repository::Clock;
///
/// /// A clock a test moves by hand.
/// #[derive(Debug)]
/// struct Manual(Mutex<Instant>);
///
/// impl Clock for Manual {
///     fn now(&self) -> Instant {
///         *self.0.lock().unwrap()
///     }
/// }
///
/// let clock = Arc::new(Manual(Mutex::new(Instant::now())));
/// let start = clock.now();
/// *clock.0.lock().unwrap() += Duration::from_secs(60);
/// assert_eq!(clock.now() - start, Duration::from_secs(60));
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real time, [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// Keeps idle keys remembered (by holding a lease on each) for a while after their run ended
/// and/or up to a number of keys, the oldest evicted first.
pub(crate) struct Retention<K, P, E, H> {
    ttl: Option<Duration>,
    max_keys: Option<usize>,
    clock: Box<dyn Clock>,
    keys: Mutex<Retained<K, P, E, H>>,
}

struct Retained<K, P, E, H> {
    /// Per retained key: its last run, and the lease that keeps it.
    entries: HashMap<K, Entry<K, P, E, H>, H>,
    /// Keys in the order their runs ended. An entry whose run is no longer its key's last one
    /// is stale and skipped.
    order: VecDeque<(Instant, RunId, K)>,
}

struct Entry<K, P, E, H> {
    run: RunId,
    _lease: Topic<K, Slot<P, E>, H>,
}

/// What retention lets go of, to be dropped once its lock is released: dropping a lease may
/// free a key, and with it the key's last state (user values).
struct Released<K, P, E, H> {
    keys: Vec<K>,
    entries: Vec<Entry<K, P, E, H>>,
}

impl<K, P, E, H> Retention<K, P, E, H>
where
    K: Key,
    P: Value,
    E: Value,
    H: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(
        ttl: Option<Duration>,
        max_keys: Option<usize>,
        clock: Box<dyn Clock>,
        hasher: H,
    ) -> Self {
        Self {
            ttl,
            max_keys,
            clock,
            keys: Mutex::new(Retained {
                entries: HashMap::with_hasher(hasher),
                order: VecDeque::new(),
            }),
        }
    }

    /// Keeps `topic`'s key remembered, its run `run` having ended just now.
    pub(crate) fn retain(&self, topic: &Topic<K, Slot<P, E>, H>, run: RunId) {
        let now = self.clock.now();
        // User code (the key's `Clone`) runs here, before the lock.
        let (key, ordered) = (topic.key().clone(), topic.key().clone());
        let lease = topic.clone();
        let mut released = Released {
            keys: Vec::new(),
            entries: Vec::new(),
        };
        {
            let mut keys = lock(&self.keys);
            let entry = Entry { run, _lease: lease };
            match keys.entries.get_mut(&key) {
                Some(known) => {
                    released.entries.push(std::mem::replace(known, entry));
                    released.keys.push(key);
                }
                None => {
                    keys.entries.insert(key, entry);
                }
            }
            keys.order.push_back((now, run, ordered));
            self.evict(&mut keys, now, &mut released);
        }
        drop(released);
    }

    /// Returns the spare capacity of the retained keys' map and queue to the allocator (the
    /// keys still retained are hashed again, under the lock, like any insertion may).
    pub(crate) fn shrink_to_fit(&self) {
        let mut keys = lock(&self.keys);
        keys.entries.shrink_to_fit();
        keys.order.shrink_to_fit();
    }

    /// Lets go of the keys whose retention has run out.
    pub(crate) fn expire(&self) {
        if self.ttl.is_none() {
            return;
        }
        let now = self.clock.now();
        let mut released = Released {
            keys: Vec::new(),
            entries: Vec::new(),
        };
        self.evict(&mut lock(&self.keys), now, &mut released);
        drop(released);
    }

    fn evict(
        &self,
        keys: &mut Retained<K, P, E, H>,
        now: Instant,
        released: &mut Released<K, P, E, H>,
    ) {
        while let Some((ended, run, key)) = keys.order.front() {
            let live = keys.entries.get(key).is_some_and(|entry| entry.run == *run);
            if live {
                let expired = self
                    .ttl
                    .is_some_and(|ttl| now.saturating_duration_since(*ended) >= ttl);
                let over = self.max_keys.is_some_and(|max| keys.entries.len() > max);
                if !(expired || over) {
                    break;
                }
            }
            if let Some((_, _, key)) = keys.order.pop_front() {
                if live && let Some((key, entry)) = keys.entries.remove_entry(&key) {
                    released.keys.push(key);
                    released.entries.push(entry);
                }
                released.keys.push(key);
            }
        }
        // Keys that run again and again leave stale entries behind: sweep them once they
        // outnumber the live ones.
        if keys.order.len() > 2 * keys.entries.len() + 16 {
            let order = std::mem::take(&mut keys.order);
            for (ended, run, key) in order {
                if keys.entries.get(&key).is_some_and(|entry| entry.run == run) {
                    keys.order.push_back((ended, run, key));
                } else {
                    released.keys.push(key);
                }
            }
        }
    }
}

impl<K, P, E, H> fmt::Debug for Retention<K, P, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Retention");
        d.field("ttl", &self.ttl).field("max_keys", &self.max_keys);
        match self.keys.try_lock() {
            Ok(keys) => d.field("retained", &keys.entries.len()),
            Err(_) => d.field("retained", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}
