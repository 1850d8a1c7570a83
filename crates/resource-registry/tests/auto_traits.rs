//! `Send`, `Sync` and `'static` for every public type.

use std::cell::Cell;
use std::collections::hash_map::RandomState;

use keyrunner_resource_registry::{Builder, Lease, Registry};

fn send_sync<T: Send + Sync>() {}
fn is_static<T: 'static>() {}

#[test]
fn public_types_are_send_and_sync_when_their_parameters_are() {
    send_sync::<Registry<String, Vec<u8>>>();
    send_sync::<Lease<String, Vec<u8>>>();
    send_sync::<Builder<String, Vec<u8>>>();
    send_sync::<Registry<u32, u32, RandomState>>();
    send_sync::<Lease<u32, u32, RandomState>>();
}

#[test]
fn a_lease_is_static_and_can_move_to_another_thread() {
    is_static::<Lease<String, Vec<u8>>>();
    let registry = Registry::new(|key: &String| key.clone());
    let lease = registry.allocate("moved".to_owned());
    let value = std::thread::spawn(move || lease.clone().to_uppercase())
        .join()
        .expect("thread does not panic");
    assert_eq!(value, "MOVED");
    assert!(registry.is_empty());
}

#[test]
fn registry_and_lease_need_no_bounds_on_a_non_sync_key_to_exist() {
    // Neither type requires `Send` or `Sync` parameters; they only inherit them.
    let registry = Registry::new(|key: &u8| Cell::new(*key));
    let lease = registry.allocate(1);
    lease.set(2);
    assert_eq!(registry.get(&1).map(|lease| lease.get()), Some(2));
}
