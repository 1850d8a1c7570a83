//! A key's own code — `Clone`, `Hash`, `Eq`, `Drop` — is user code. What the driver runs of it on
//! the task's behalf (cloning the key into the task's context) is caught like the task's panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Manual, poll_once};
use futures::executor::LocalPool;
use futures::stream;
use keyrunner_task_runner_repository::{Outcome, TaskRunnerRepository};

/// A key whose `Clone` panics once `fragile` is set.
#[derive(Debug)]
struct Fragile {
    id: u32,
    fragile: Arc<AtomicBool>,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(
            !self.fragile.load(Ordering::SeqCst),
            "the key's clone panics"
        );
        Self {
            id: self.id,
            fragile: Arc::clone(&self.fragile),
        }
    }
}

impl PartialEq for Fragile {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Fragile {}

impl Hash for Fragile {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

/// The driver clones the key into the task's context just before it calls the task. A panic
/// there must end the run as `Panicked`, like a panic of the task itself — not escape into the
/// executor and leave the run to end as `Lost` whenever the executor drops the driver.
#[test]
fn a_key_whose_clone_panics_in_the_driver_ends_the_run_panicked() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: TaskRunnerRepository<Fragile, u32> = manual.repository();
    let fragile = Arc::new(AtomicBool::new(false));
    let key = Fragile {
        id: 1,
        fragile: Arc::clone(&fragile),
    };
    let handle = repo.run(key.clone(), |_| stream::iter([1])).unwrap();
    fragile.store(true, Ordering::SeqCst);
    let driven = panic::catch_unwind(AssertUnwindSafe(|| manual.drive(&mut pool)));
    fragile.store(false, Ordering::SeqCst);
    assert!(driven.is_ok(), "the key's panic escaped to the executor");
    assert_eq!(
        handle.outcome(),
        Some(Outcome::Panicked {
            message: Some("the key's clone panics".into())
        })
    );
    assert!(repo.state(&key).is_idle());
    assert_eq!(repo.live_tasks(), 0);
}

/// Shutdown stops every run and ends every stream; it needs no key to do so. A key whose `Clone`
/// panics must not make it unwind half done — refusing runs from then on, yet leaving the runs
/// running, the streams open and the shutdown signal unfired (and, for the implicit shutdown of
/// a dropped last handle, with no way to try again).
#[test]
fn a_key_whose_clone_panics_does_not_keep_shutdown_from_stopping_every_run() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: TaskRunnerRepository<Fragile, u32> = manual.repository();
    let fragile = Arc::new(AtomicBool::new(false));
    let key = |id| Fragile {
        id,
        fragile: Arc::clone(&fragile),
    };
    let handle = repo.run(key(1), |_| stream::pending::<u32>()).unwrap();
    let mut events = repo.stream(key(2));
    manual.drive(&mut pool);
    // Cleared before `repo` is dropped, even by a failing assertion: the implicit shutdown of
    // its drop would otherwise panic again while unwinding.
    let _fragile = Fragility::set(&fragile);

    let shutdown = panic::catch_unwind(AssertUnwindSafe(|| repo.shutdown(None)));
    let mut shutdown = shutdown.expect("shutdown cloned a key, and unwound");
    manual.drive(&mut pool);
    assert!(handle.outcome().unwrap().is_stopped());
    assert!(poll_once(&mut shutdown), "the shutdown never resolves");
    assert!(repo.shutdown_signal().is_aborted());
    let seen: Vec<_> = futures::executor::block_on_stream(&mut events).collect();
    assert_eq!(
        seen.len(),
        1,
        "the stream yields its key's state, then ends"
    );
}

/// Makes keys' `Clone` panic until dropped.
struct Fragility(Arc<AtomicBool>);

impl Fragility {
    fn set(fragile: &Arc<AtomicBool>) -> Self {
        fragile.store(true, Ordering::SeqCst);
        Self(Arc::clone(fragile))
    }
}

impl Drop for Fragility {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
