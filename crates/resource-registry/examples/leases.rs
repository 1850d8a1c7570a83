//! Connection slots shared per host: one value per key, freed with its last lease unless the
//! cleanup predicate keeps it.
//!
//! Run it with `cargo run -p keyrunner-resource-registry --example leases`.

use std::sync::atomic::{AtomicUsize, Ordering};

use keyrunner_resource_registry::Registry;

/// What each host gets: a counter of requests made through it.
#[derive(Debug, Default)]
struct Slot {
    requests: AtomicUsize,
}

fn main() {
    // Keep a slot that served requests even once nobody leases it; drop an unused one at once.
    let slots = Registry::builder(|host: &String| {
        println!("open a slot for {host}");
        Slot::default()
    })
    .cleanup(|_host, slot| slot.requests.load(Ordering::Relaxed) == 0)
    .build();

    let a = slots.allocate("db.internal".to_owned());
    let b = slots.allocate("db.internal".to_owned()); // the same slot: no second "open"
    a.requests.fetch_add(1, Ordering::Relaxed);
    println!(
        "db.internal served {} request(s)",
        b.requests.load(Ordering::Relaxed)
    );
    drop((a, b));
    println!(
        "db.internal still allocated: {}",
        slots.is_allocated("db.internal")
    );

    drop(slots.allocate("cache.internal".to_owned())); // never used: freed with its lease
    println!(
        "cache.internal still allocated: {}",
        slots.is_allocated("cache.internal")
    );
    assert_eq!(slots.len(), 1);
}
