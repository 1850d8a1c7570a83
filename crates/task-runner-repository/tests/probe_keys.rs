//! A key's own code — `Clone`, `Hash`, `Eq`, `Drop` — is user code. What the driver runs of it on
//! the task's behalf (cloning the key into the task's context) is caught like the task's panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::Manual;
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
