//! Opt-in retention of idle keys' last outcomes, measured with a clock the test moves.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Manual, ended, idle};
use futures::executor::LocalPool;
use futures::stream::{self, StreamExt};
use keyrunner_task_runner_repository::{
    Clock, Delta, Outcome, Reason, State, TaskRunnerRepository,
};

type Repo = TaskRunnerRepository<&'static str, String>;

/// A clock the test moves by hand.
#[derive(Debug)]
struct TestClock(Mutex<Instant>);

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Instant::now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

fn complete(repo: &Repo, manual: &Manual, pool: &mut LocalPool, key: &'static str, reply: &str) {
    let tokens: Vec<Delta<String>> = reply
        .split_inclusive(' ')
        .map(|token| Delta(token.to_owned()))
        .collect();
    repo.run(key, move |_| stream::iter(tokens))
        .unwrap()
        .detach();
    manual.drive(pool);
}

#[test]
fn retention_is_off_by_default() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = manual.repository();
    complete(&repo, &manual, &mut pool, "a", "hello there");
    assert_eq!(repo.len(), 0);
    assert!(!repo.is_allocated(&"a"));
    assert_eq!(
        repo.state(&"a"),
        idle(None),
        "never ran, as far as anyone can tell"
    );
}

#[test]
fn a_finished_key_is_kept_for_the_duration_from_its_end_and_reads_do_not_extend_it() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let clock = TestClock::new();
    let repo: Repo = TaskRunnerRepository::builder(manual.spawner())
        .retain_for(Duration::from_secs(60))
        .clock(Arc::clone(&clock))
        .build();
    complete(&repo, &manual, &mut pool, "a", "hello there");

    let finished = ended(Outcome::Completed, Some("hello there".to_owned()));
    assert_eq!(repo.len(), 1, "a retained key counts");
    assert!(repo.is_allocated(&"a"));
    assert_eq!(
        repo.state(&"a"),
        finished,
        "the outcome and the final reply"
    );

    clock.advance(Duration::from_secs(59));
    assert_eq!(repo.state(&"a"), finished, "still within a minute");
    // Reads at 59 s do not push the deadline: it is counted from the run's end.
    clock.advance(Duration::from_secs(1));
    assert_eq!(repo.len(), 0, "a minute after the end, it is gone");
    assert!(!repo.is_allocated(&"a"));
    assert_eq!(repo.state(&"a"), idle(None));
}

#[test]
fn at_most_n_keys_are_kept_and_the_oldest_end_goes_first() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = TaskRunnerRepository::builder(manual.spawner())
        .retain_keys(2)
        .build();
    complete(&repo, &manual, &mut pool, "a", "1");
    complete(&repo, &manual, &mut pool, "b", "2");
    complete(&repo, &manual, &mut pool, "c", "3");
    assert_eq!(repo.len(), 2);
    assert!(!repo.is_allocated(&"a"), "a ended first: evicted");
    assert!(repo.is_allocated(&"b") && repo.is_allocated(&"c"));

    // b runs again: its end is now the newest, so c is the oldest.
    complete(&repo, &manual, &mut pool, "b", "4");
    complete(&repo, &manual, &mut pool, "d", "5");
    assert_eq!(repo.len(), 2);
    assert!(!repo.is_allocated(&"c"));
    assert_eq!(
        repo.state(&"b"),
        ended(Outcome::Completed, Some("4".to_owned()))
    );
    assert_eq!(
        repo.state(&"d"),
        ended(Outcome::Completed, Some("5".to_owned()))
    );

    // Keys that run again and again leave nothing behind but themselves.
    for round in 0..1_000 {
        complete(&repo, &manual, &mut pool, "b", &round.to_string());
    }
    assert_eq!(repo.len(), 2);
}

#[test]
fn both_bounds_apply_and_holders_outlast_retention() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let clock = TestClock::new();
    let repo: Repo = TaskRunnerRepository::builder(manual.spawner())
        .retain_for(Duration::from_secs(10))
        .retain_keys(1)
        .clock(Arc::clone(&clock))
        .build();
    let watched = repo.listen("a", |_| {}, false);
    complete(&repo, &manual, &mut pool, "a", "kept by its listener");
    complete(&repo, &manual, &mut pool, "b", "kept by retention");
    assert_eq!(repo.len(), 2, "a is listened to, b is retained");

    clock.advance(Duration::from_secs(10));
    assert_eq!(repo.len(), 1, "b's time is up; a's listener still holds it");
    assert_eq!(
        repo.state(&"a").progress().map(String::as_str),
        Some("kept by its listener")
    );
    drop(watched);
    assert!(repo.is_empty());
}

#[test]
fn stopped_runs_are_retained_with_their_reason_and_progress() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Repo = TaskRunnerRepository::builder(manual.spawner())
        .retain_keys(10)
        .build();
    repo.run("a", |_| {
        stream::iter([Delta("partial".to_owned())]).chain(stream::pending())
    })
    .unwrap()
    .detach();
    manual.drive(&mut pool);
    assert_eq!(repo.stop(&"a", Reason::from("user")).map(|_| ()), Ok(()));
    manual.drive(&mut pool);
    let state: State<String> = repo.state(&"a");
    assert_eq!(
        state,
        ended(
            Outcome::Stopped {
                reason: Some(Reason::from("user"))
            },
            Some("partial".to_owned())
        )
    );
}
