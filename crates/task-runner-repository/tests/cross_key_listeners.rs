//! Listeners calling back into the repository from inside a delivery, across keys and threads.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use common::{Manual, finishes};
use futures::stream;
use keyrunner_task_runner_repository::{
    Event, EventStream, RunHandle, Subscription, TaskRunnerRepository,
};

type Repo = TaskRunnerRepository<u32, u32>;

/// What a listener of one key drops: a subscription and a stream of the other key.
type Victims = Arc<Mutex<Option<(Subscription, EventStream<u32>)>>>;

/// Two keys start runs on two threads at once; each key's listener, once both deliveries are in
/// flight, drops a subscription and a stream of the other key — whose delivery is in flight on
/// the other thread. Neither may wait for the other.
#[test]
fn listeners_of_two_keys_dropping_each_others_subscriptions_do_not_deadlock() {
    assert!(
        finishes(|| {
            for _ in 0..100 {
                let manual = Manual::default();
                let repo: Repo = manual.repository();
                let both_in_flight = Arc::new(Barrier::new(2));
                let victims = |key| -> Victims {
                    Arc::new(Mutex::new(Some((
                        repo.listen(key, |_| {}, false),
                        repo.stream(key),
                    ))))
                };
                let remover = |victims: &Victims| {
                    let (victims, both_in_flight) =
                        (Arc::clone(victims), Arc::clone(&both_in_flight));
                    let once = AtomicBool::new(true);
                    move |event: &Event<u32>| {
                        if event.state().is_some_and(|state| state.is_running())
                            && once.swap(false, Ordering::SeqCst)
                        {
                            both_in_flight.wait();
                            drop(victims.lock().unwrap().take());
                        }
                    }
                };
                let (of_1, of_2) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
                let _on_1 = repo.listen(1, remover(&of_2), false);
                let _on_2 = repo.listen(2, remover(&of_1), false);
                *of_1.lock().unwrap() = victims(1).lock().unwrap().take();
                *of_2.lock().unwrap() = victims(2).lock().unwrap().take();
                let other = repo.clone();
                let second = thread::spawn(move || {
                    other
                        .run(2, |_| stream::pending::<u32>())
                        .map(RunHandle::detach)
                });
                repo.run(1, |_| stream::pending::<u32>())
                    .map(RunHandle::detach)
                    .unwrap();
                second.join().unwrap().unwrap();
                assert!(of_1.lock().unwrap().is_none() && of_2.lock().unwrap().is_none());
            }
        }),
        "two keys' listeners removing each other's subscriptions deadlocked"
    );
}
