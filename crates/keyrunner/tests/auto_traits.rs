//! Every public type of every layer is `Send + Sync` (and `Unpin` where it is a future, a stream
//! or a guard meant to be moved around), with concrete type parameters.

use std::collections::hash_map::RandomState;

use keyrunner::pub_sub::{self, PubSub, Topic, TopicStream};
use keyrunner::resource_registry::{self, Lease, Registry};
use keyrunner::subject::{self, Subject, SubjectStream};
use keyrunner::task_runner_repository::{
    AbortCallback, IntoProgress, LastError, ParsePositionError, SpawnFn, SystemClock, WaitForAbort,
    progress,
};
use keyrunner::{
    AbortController, AbortSignal, Builder, Conflict, Controller, Delta, Driver, Event, EventStream,
    IdleNode, NoError, Observer, Outcome, Position, Reason, RunError, RunHandle, RunId,
    RunningNode, Shutdown, State, StateNode, StopError, Subscription, TaskContext,
    TaskRunnerRepository, spawn_fn,
};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_unpin<T: Unpin>() {}
fn assert_spawn<T: keyrunner::Spawn>() {}

type Key = String;
type Value = u32;
type Error = std::io::Error;

#[test]
fn resource_registry_types_are_send_and_sync() {
    assert_send_sync::<Registry<Key, Value>>();
    assert_send_sync::<Registry<Key, Value, RandomState>>();
    assert_send_sync::<resource_registry::Builder<Key, Value>>();
    assert_send_sync::<Lease<Key, Value>>();

    assert_unpin::<Registry<Key, Value>>();
    assert_unpin::<Lease<Key, Value>>();
}

#[test]
fn subject_types_are_send_and_sync() {
    assert_send_sync::<Subject<Value>>();
    assert_send_sync::<subject::Subscription>();
    assert_send_sync::<SubjectStream<Value>>();

    assert_unpin::<Subject<Value>>();
    assert_unpin::<subject::Subscription>();
    assert_unpin::<SubjectStream<Value>>();
}

#[test]
fn pub_sub_types_are_send_and_sync() {
    assert_send_sync::<PubSub<Key, Value>>();
    assert_send_sync::<pub_sub::Builder<Key, Value>>();
    assert_send_sync::<Topic<Key, Value>>();
    assert_send_sync::<pub_sub::Subscription<Key, Value>>();
    assert_send_sync::<TopicStream<Key, Value>>();

    assert_unpin::<PubSub<Key, Value>>();
    assert_unpin::<Topic<Key, Value>>();
    assert_unpin::<pub_sub::Subscription<Key, Value>>();
    assert_unpin::<TopicStream<Key, Value>>();
}

#[test]
fn task_runner_repository_types_are_send_and_sync() {
    assert_send_sync::<TaskRunnerRepository<Key, Value>>();
    assert_send_sync::<TaskRunnerRepository<Key, Value, Error>>();
    assert_send_sync::<TaskRunnerRepository<Key, Value, Error, RandomState>>();
    assert_send_sync::<Builder<Key, Value, Error>>();
    assert_send_sync::<Observer<Key, Value, Error>>();
    assert_send_sync::<Controller<Key, Value, Error>>();
    assert_send_sync::<StateNode<Key, Value, Error>>();
    assert_send_sync::<IdleNode<Key, Value, Error>>();
    assert_send_sync::<RunningNode<Key, Value, Error>>();
    assert_send_sync::<Conflict>();
    assert_send_sync::<State<Value, Error>>();
    assert_send_sync::<State<Value>>();
    assert_send_sync::<Event<Value, Error>>();
    assert_send_sync::<Position>();
    assert_send_sync::<ParsePositionError>();
    assert_send_sync::<Delta<Value>>();
    assert_send_sync::<Outcome<Error>>();
    assert_send_sync::<Outcome>();
    assert_send_sync::<NoError>();
    assert_send_sync::<LastError<'static, Error>>();
    assert_send_sync::<Reason>();
    assert_send_sync::<RunId>();
    assert_send_sync::<RunHandle<Error>>();
    assert_send_sync::<RunError<fn()>>();
    assert_send_sync::<RunError>();
    assert_send_sync::<StopError>();
    assert_send_sync::<AbortController>();
    assert_send_sync::<AbortSignal>();
    assert_send_sync::<AbortCallback>();
    assert_send_sync::<WaitForAbort>();
    assert_send_sync::<TaskContext<Key>>();
    assert_send_sync::<Subscription>();
    assert_send_sync::<EventStream<Value, Error>>();
    assert_send_sync::<Shutdown>();
    assert_send_sync::<SystemClock>();
    assert_send_sync::<progress::Plain>();
    assert_send_sync::<progress::Fallible>();
    assert_send_sync::<progress::PlainDelta>();
    assert_send_sync::<progress::FallibleDelta>();

    // The task-free error boxes, whatever the task.
    fn assert_boxes<T: std::error::Error + Send + Sync + 'static>() {}
    assert_boxes::<RunError>();
    assert_boxes::<StopError>();
    assert_boxes::<NoError>();
    assert_boxes::<ParsePositionError>();

    // Futures, streams and guards can be moved after being polled.
    assert_unpin::<TaskRunnerRepository<Key, Value, Error>>();
    assert_unpin::<RunHandle<Error>>();
    assert_unpin::<EventStream<Value, Error>>();
    assert_unpin::<Shutdown>();
    assert_unpin::<WaitForAbort>();
    assert_unpin::<AbortCallback>();
    assert_unpin::<Subscription>();
    assert_unpin::<Driver>();

    // A driver is what a spawner gets: it is `Send`, not `Sync`.
    fn assert_send<T: Send>() {}
    assert_send::<Driver>();

    // The item types a task stream may yield.
    fn assert_progress<P, T: IntoProgress<P, Error, M>, M>() {}
    assert_progress::<Value, Value, progress::Plain>();
    assert_progress::<Value, Result<Value, Error>, progress::Fallible>();
    assert_progress::<String, Delta<String>, progress::PlainDelta>();
    assert_progress::<Vec<u8>, Result<Delta<Vec<u8>>, Error>, progress::FallibleDelta>();
}

#[test]
fn spawners_are_send_sync_clone_and_debug() {
    fn assert_clone_debug<T: Clone + std::fmt::Debug>() {}

    assert_send_sync::<keyrunner::tokio::TokioSpawner>();
    assert_clone_debug::<keyrunner::tokio::TokioSpawner>();
    assert_spawn::<keyrunner::tokio::TokioSpawner>();

    assert_send_sync::<keyrunner::smol::SmolSpawner>();
    assert_clone_debug::<keyrunner::smol::SmolSpawner>();
    assert_spawn::<keyrunner::smol::SmolSpawner>();

    // A closure is a spawner through `spawn_fn`, with no annotation.
    fn spawn_of<T: keyrunner::Spawn>(_: &T) {}
    let spawner = spawn_fn(|driver| {
        let _refused = driver;
    });
    spawn_of(&spawner);
    assert_send_sync::<SpawnFn<fn(Driver)>>();
}
