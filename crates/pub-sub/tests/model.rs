//! Model-based property test: random listen / unsubscribe / next / hold-topic sequences, applied
//! to a `PubSub` and to a plain reference model, agree after every step.
//!
//! Compared after each step: every key's last value, whether it is allocated, `len`, and the
//! whole sequence of values each live listener saw. Two configurations are drawn: the default
//! (free at the last lease) and one with an initial value for key 0 and a keep-predicate that
//! keeps even values.
//!
//! Cases: `KEYRUNNER_PROPTEST_CASES` (default 256); `cargo xtask proptest` runs 10,000. A
//! failing case is saved under `tests/proptest-regressions/` and replayed first on every run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keyrunner_pub_sub::{PubSub, Subscription, Topic};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

type Key = u8;
const KEYS: Key = 3;
const INITIAL: u32 = 100;

#[derive(Debug, Clone)]
enum Op {
    Listen { key: Key, immediate: bool },
    Unsubscribe { pick: usize },
    Next { key: Key, value: u32 },
    HoldTopic { key: Key },
    TopicNext { pick: usize, value: u32 },
    DropTopic { pick: usize },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let value = 0..6u32;
    prop_oneof![
        3 => (key.clone(), any::<bool>()).prop_map(|(key, immediate)| Op::Listen { key, immediate }),
        2 => any::<usize>().prop_map(|pick| Op::Unsubscribe { pick }),
        5 => (key.clone(), value.clone()).prop_map(|(key, value)| Op::Next { key, value }),
        1 => key.prop_map(|key| Op::HoldTopic { key }),
        1 => (any::<usize>(), value).prop_map(|(pick, value)| Op::TopicNext { pick, value }),
        1 => any::<usize>().prop_map(|pick| Op::DropTopic { pick }),
        1 => Just(Op::Sweep),
    ]
}

/// The reference model: a map of allocated keys, each with its lease count, last value and
/// whether it ever emitted.
#[derive(Debug, Default)]
struct Model {
    configured: bool,
    entries: HashMap<Key, Entry>,
    listeners: Vec<(Key, Vec<u32>)>,
    topics: Vec<Key>,
}

#[derive(Debug)]
struct Entry {
    leases: usize,
    last: Option<u32>,
    emitted: bool,
}

impl Model {
    fn initial(&self, key: Key) -> Option<u32> {
        (self.configured && key == 0).then_some(INITIAL)
    }

    /// Whether an unleased entry is freed.
    fn frees(&self, entry: &Entry) -> bool {
        !self.configured || !entry.emitted || entry.last.is_none_or(|last| last % 2 == 1)
    }

    fn allocate(&mut self, key: Key) {
        let initial = self.initial(key);
        self.entries
            .entry(key)
            .or_insert(Entry {
                leases: 0,
                last: initial,
                emitted: false,
            })
            .leases += 1;
    }

    fn release(&mut self, key: Key) {
        let entry = self
            .entries
            .get_mut(&key)
            .expect("a leased key is allocated");
        entry.leases -= 1;
        if entry.leases == 0 && self.frees(&self.entries[&key]) {
            self.entries.remove(&key);
        }
    }

    fn deliver(&mut self, key: Key, value: u32) {
        let entry = self
            .entries
            .get_mut(&key)
            .expect("delivered to an allocated key");
        entry.last = Some(value);
        entry.emitted = true;
        for (listened, seen) in &mut self.listeners {
            if *listened == key {
                seen.push(value);
            }
        }
    }

    fn next(&mut self, key: Key, value: u32) {
        if self.entries.contains_key(&key) {
            // A lease for the emission, released after it.
            self.allocate(key);
            self.deliver(key, value);
            self.release(key);
        } else if self.configured && value.is_multiple_of(2) {
            // Worth keeping: allocated, emitted, then kept with no lease.
            self.allocate(key);
            self.deliver(key, value);
            self.release(key);
        }
    }

    fn last(&self, key: Key) -> Option<u32> {
        match self.entries.get(&key) {
            Some(entry) => entry.last,
            None => self.initial(key),
        }
    }
}

type Seen = Arc<Mutex<Vec<u32>>>;

struct Harness {
    pubsub: PubSub<Key, u32>,
    listeners: Vec<(Subscription<Key, u32>, Seen)>,
    topics: Vec<Topic<Key, u32>>,
    model: Model,
}

impl Harness {
    fn new(configured: bool) -> Self {
        let pubsub = if configured {
            PubSub::builder()
                .initial_value(|key: &Key| (*key == 0).then_some(INITIAL))
                .should_cleanup(|_: &Key, last: &u32| last % 2 == 1)
                .build()
        } else {
            PubSub::new()
        };
        Self {
            pubsub,
            listeners: Vec::new(),
            topics: Vec::new(),
            model: Model {
                configured,
                ..Model::default()
            },
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Listen { key, immediate } => {
                let seen: Seen = Arc::default();
                let sink = Arc::clone(&seen);
                let subscription = self.pubsub.listen(
                    key,
                    move |value: &u32| {
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(*value)
                    },
                    immediate,
                );
                self.listeners.push((subscription, seen));
                self.model.allocate(key);
                let seen = if immediate {
                    self.model.last(key).into_iter().collect()
                } else {
                    Vec::new()
                };
                self.model.listeners.push((key, seen));
            }
            Op::Unsubscribe { pick } => {
                if !self.listeners.is_empty() {
                    let index = pick % self.listeners.len();
                    self.listeners.remove(index).0.unsubscribe();
                    let (key, _) = self.model.listeners.remove(index);
                    self.model.release(key);
                }
            }
            Op::Next { key, value } => {
                self.pubsub.next(key, value);
                self.model.next(key, value);
            }
            Op::HoldTopic { key } => {
                self.topics.push(self.pubsub.subject(key));
                self.model.allocate(key);
                self.model.topics.push(key);
            }
            Op::TopicNext { pick, value } => {
                if !self.topics.is_empty() {
                    let index = pick % self.topics.len();
                    self.topics[index].next(value);
                    let key = self.model.topics[index];
                    self.model.deliver(key, value);
                }
            }
            Op::DropTopic { pick } => {
                if !self.topics.is_empty() {
                    let index = pick % self.topics.len();
                    drop(self.topics.remove(index));
                    let key = self.model.topics.remove(index);
                    self.model.release(key);
                }
            }
            Op::Sweep => {
                // The predicate is pure, so every entry it would free is already gone.
                assert_eq!(self.pubsub.sweep(), 0, "nothing left to sweep");
            }
        }
    }

    fn check(&self) {
        for key in 0..KEYS {
            assert_eq!(
                self.pubsub.last(&key).map(|last| *last),
                self.model.last(key),
                "last value of key {key}"
            );
            assert_eq!(
                self.pubsub.is_allocated(&key),
                self.model.entries.contains_key(&key),
                "allocation of key {key}"
            );
        }
        assert_eq!(self.pubsub.len(), self.model.entries.len(), "len");
        assert_eq!(self.pubsub.is_empty(), self.model.entries.is_empty());
        for (index, ((_, seen), (key, expected))) in
            self.listeners.iter().zip(&self.model.listeners).enumerate()
        {
            assert_eq!(
                &*seen.lock().unwrap_or_else(PoisonError::into_inner),
                expected,
                "listener {index} on key {key}"
            );
        }
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("KEYRUNNER_PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/model.txt"
        )))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pub_sub_agrees_with_the_reference_model(
        configured in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut harness = Harness::new(configured);
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        // Dropping every lease leaves only the entries the predicate keeps.
        harness.listeners.clear();
        harness.topics.clear();
        let held: Vec<Key> = harness.model.listeners.drain(..).map(|(key, _)| key)
            .chain(harness.model.topics.drain(..))
            .collect();
        for key in held {
            harness.model.release(key);
        }
        harness.check();
        prop_assert!(harness.model.entries.values().all(|entry| entry.leases == 0));
    }
}
