//! Allocation, lookup and counting: the value's lifetime follows its leases.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyrunner_resource_registry::Registry;

/// A registry whose values are `(key, n)` where `n` numbers the initializer's calls.
fn numbered() -> (
    Registry<&'static str, (&'static str, usize)>,
    Arc<AtomicUsize>,
) {
    let inits = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new({
        let inits = Arc::clone(&inits);
        move |key: &&'static str| (*key, inits.fetch_add(1, Ordering::SeqCst))
    });
    (registry, inits)
}

#[test]
fn allocate_twice_free_once_keeps_the_key_free_again_removes_it() {
    let (registry, _) = numbered();
    let first = registry.allocate("a");
    let second = registry.allocate("a");
    assert_eq!(registry.len(), 1);

    drop(first);
    assert!(registry.is_allocated("a"));
    assert_eq!(registry.len(), 1);

    drop(second);
    assert!(!registry.is_allocated("a"));
    assert_eq!(registry.len(), 0);
    assert!(registry.is_empty());
}

#[test]
fn every_lease_of_a_key_shares_one_value() {
    let (registry, _) = numbered();
    let first = registry.allocate("a");
    let second = registry.allocate("a");
    let looked_up = registry.get("a").expect("allocated");
    assert!(std::ptr::eq(&*first, &*second));
    assert!(std::ptr::eq(&*first, &*looked_up));
    assert_eq!(*first, ("a", 0));
}

#[test]
fn distinct_keys_get_distinct_values() {
    let (registry, inits) = numbered();
    let a = registry.allocate("a");
    let b = registry.allocate("b");
    assert_eq!((*a, *b), (("a", 0), ("b", 1)));
    assert_eq!(registry.len(), 2);
    assert_eq!(inits.load(Ordering::SeqCst), 2);
    drop(a);
    assert!(!registry.is_allocated("a"));
    assert!(registry.is_allocated("b"));
}

#[test]
fn initializer_runs_once_per_allocation_lifetime() {
    let (registry, inits) = numbered();
    let leases: Vec<_> = (0..5).map(|_| registry.allocate("a")).collect();
    let looked_up = registry.get("a").expect("allocated");
    assert_eq!(inits.load(Ordering::SeqCst), 1);
    drop(leases);
    drop(looked_up);

    let again = registry.allocate("a");
    assert_eq!(inits.load(Ordering::SeqCst), 2);
    assert_eq!(*again, ("a", 1), "a freed key gets a fresh value");
}

#[test]
fn unknown_keys_are_safe_to_look_up() {
    let (registry, inits) = numbered();
    assert!(registry.get("missing").is_none());
    assert!(!registry.is_allocated("missing"));
    assert_eq!(registry.sweep(), 0);

    let lease = registry.allocate("present");
    assert!(registry.get("missing").is_none());
    assert_eq!(registry.len(), 1);
    drop(lease);
    assert!(
        registry.get("present").is_none(),
        "get never revives a freed key"
    );
    assert_eq!(inits.load(Ordering::SeqCst), 1, "get never creates");
    assert!(registry.is_empty());
}

#[test]
fn get_counts_as_an_allocation() {
    let (registry, _) = numbered();
    let allocated = registry.allocate("a");
    let looked_up = registry.get("a").expect("allocated");
    drop(allocated);
    assert!(
        registry.is_allocated("a"),
        "the looked-up lease still holds the key"
    );
    drop(looked_up);
    assert!(!registry.is_allocated("a"));
}

#[test]
fn get_accepts_a_borrowed_key() {
    let registry = Registry::new(|key: &String| key.len());
    let _held = registry.allocate("four".to_owned());
    let lease = registry.get("four").expect("allocated");
    assert_eq!(lease.key(), "four");
    assert_eq!(*lease, 4);
}

#[test]
fn clones_of_the_registry_share_entries() {
    let (registry, _) = numbered();
    let clone = registry.clone();
    let lease = clone.allocate("a");
    assert!(registry.is_allocated("a"));
    drop(lease);
    assert!(!registry.is_allocated("a"));
}

#[test]
fn for_each_visits_every_allocated_entry_once() {
    let (registry, _) = numbered();
    let _leases = [
        registry.allocate("a"),
        registry.allocate("b"),
        registry.allocate("c"),
    ];
    let mut seen = Vec::new();
    registry.for_each(|key, value| {
        assert_eq!(*key, value.0);
        seen.push(*key);
    });
    seen.sort_unstable();
    assert_eq!(seen, ["a", "b", "c"]);
}

#[test]
fn shrink_to_fit_releases_the_map_of_an_emptied_registry() {
    let registry = Registry::new(|key: &u32| *key);
    let leases: Vec<_> = (0..1000).map(|key| registry.allocate(key)).collect();
    assert!(registry.capacity() >= 1000);
    drop(leases);
    assert!(registry.is_empty());
    assert!(
        registry.capacity() >= 1000,
        "freeing keeps capacity until asked"
    );
    registry.shrink_to_fit();
    assert_eq!(registry.capacity(), 0);
}

#[test]
fn debug_prints_len_without_key_or_value_debug() {
    struct Opaque;
    let registry = Registry::new(|_: &u8| Opaque);
    let _lease = registry.allocate(1);
    assert_eq!(format!("{registry:?}"), "Registry { len: 1, .. }");
}

/// A key whose `Eq` runs a hook: the only user code that runs under the registry's lock.
struct Spy(u8);

impl std::hash::Hash for Spy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

thread_local! {
    static ON_EQ: std::cell::RefCell<Option<Box<dyn FnMut()>>> = const { std::cell::RefCell::new(None) };
}

impl PartialEq for Spy {
    fn eq(&self, other: &Self) -> bool {
        ON_EQ.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook();
            }
        });
        self.0 == other.0
    }
}

impl Eq for Spy {}

#[test]
fn debug_does_not_block_while_the_registry_is_locked() {
    let registry = Registry::new(|_: &Spy| ());
    let _lease = registry.allocate(Spy(1));
    let printed = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
    ON_EQ.with(|hook| {
        let (registry, printed) = (registry.clone(), std::rc::Rc::clone(&printed));
        *hook.borrow_mut() = Some(Box::new(move || {
            *printed.borrow_mut() = format!("{registry:?}")
        }));
    });
    // The lookup compares keys under the lock.
    assert!(registry.is_allocated(&Spy(1)));
    ON_EQ.with(|hook| hook.borrow_mut().take());
    assert_eq!(*printed.borrow(), "Registry { len: <locked>, .. }");
}

#[test]
fn builder_debug_says_whether_a_predicate_is_set() {
    let plain = Registry::<u8, u8>::builder(|key| *key);
    assert_eq!(format!("{plain:?}"), "Builder { cleanup: false, .. }");
    let with_cleanup = plain.cleanup(|_, _| true);
    assert_eq!(format!("{with_cleanup:?}"), "Builder { cleanup: true, .. }");
}
