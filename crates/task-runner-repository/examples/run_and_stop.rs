//! One task per key: run on an idle key, stop a running one, and watch the transitions.
//!
//! Run it with `cargo run -p keyrunner-task-runner-repository --example run_and_stop`.

use futures::executor::block_on;
use futures::stream;
use keyrunner_task_runner_repository::{
    Outcome, Reason, StateNode, TaskRunnerRepository, spawn_fn,
};

fn main() {
    // The repository knows no runtime: `spawn_fn` turns a closure into its spawner. Here, every
    // run's driver gets a thread of its own.
    let syncs: TaskRunnerRepository<&str, u32> = TaskRunnerRepository::new(spawn_fn(|driver| {
        std::thread::spawn(move || block_on(driver));
    }));
    let _watch = syncs.listen("alice", |event| println!("alice: {event:?}"), false);

    // A sync that reports three progress items and completes.
    let handle = match syncs.state_node("alice") {
        StateNode::Idle(idle) => idle
            .run(|_cx| stream::iter([1, 2, 3]))
            .expect("an idle node runs unless the repository shut down"),
        StateNode::Running(_) => unreachable!("nothing runs yet"),
    };
    assert_eq!(block_on(handle), Outcome::Completed);

    // A sync that never ends by itself, stopped with a reason.
    let handle = syncs
        .run("alice", |_cx| stream::pending::<u32>())
        .expect("alice is idle again: her first run completed");
    if let StateNode::Running(running) = syncs.state_node("alice") {
        running
            .stop(Reason::from("user signed out"))
            .expect("the node saw this very run, which never ends by itself");
    }
    let outcome = block_on(handle);
    println!("second run: {outcome:?}");
    assert!(matches!(outcome, Outcome::Stopped { .. }));
}
