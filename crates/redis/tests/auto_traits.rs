//! Every public type is `Send + Sync` (for `String` keys, progress and errors), so it can be
//! held in a `static`, moved into tasks, and shared.

use keyrunner_redis::{
    Builder, ClusterRepository, Error, IdleNode, RunError, RunHandle, RunningNode, Shutdown,
    StateNode, StateStream, StopError, Subscription, TaskContext, Transition,
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
    send_sync::<StateStream<P, E>>();
    send_sync::<Shutdown>();
    send_sync::<Transition<P, E>>();
    send_sync::<TaskContext<K>>();
    send_sync::<Error>();
    send_sync::<StopError>();
    send_sync::<RunError<fn()>>();
    send::<RunError<Box<dyn FnOnce() + Send>>>();
}
