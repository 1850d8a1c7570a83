//! Every public type is `Send + Sync` (for `String` keys, progress and errors), so it can be
//! held in a `static`, moved into tasks, and shared.

use keyrunner_redis::{
    Builder, ClusterRepository, Driver, Error, Event, EventStream, IdleNode, RunError, RunHandle,
    RunningNode, Shutdown, StateNode, StopError, Subscription, TaskContext,
};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync() {
    type K = String;
    type P = String;
    type E = String;
    send_sync::<ClusterRepository<K, P, E>>();
    send_sync::<Builder<K, P, E>>();
    send_sync::<StateNode<K, P, E>>();
    send_sync::<IdleNode<K, P, E>>();
    send_sync::<RunningNode<K, P, E>>();
    send_sync::<RunHandle<E>>();
    send_sync::<Subscription>();
    send_sync::<EventStream<P, E>>();
    send_sync::<Shutdown>();
    send_sync::<Event<P, E>>();
    send::<Driver>();
    send_sync::<TaskContext<K>>();
    send_sync::<Error>();
    send_sync::<StopError>();
    send_sync::<RunError<fn()>>();
    send::<RunError<Box<dyn FnOnce() + Send>>>();
}
