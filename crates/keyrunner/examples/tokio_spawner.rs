//! The smallest program with the umbrella crate: one repository on the tokio runtime.
//!
//! Run it with `cargo run -p keyrunner --features tokio --example tokio_spawner`.

use futures::stream;
use keyrunner::tokio::TokioSpawner;
use keyrunner::{Outcome, TaskRunnerRepository};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let builds: TaskRunnerRepository<&str, u32> =
        TaskRunnerRepository::new(TokioSpawner::current());
    let _watch = builds.listen("main", |state| println!("main: {state:?}"), false);
    let handle = builds
        .run("main", |_cx| stream::iter([10, 50, 100]))
        .expect("nothing runs on main yet");
    assert_eq!(handle.await, Outcome::Completed);
}
