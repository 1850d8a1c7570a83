//! Three replicas on one (private) Redis: a run on one, a stop from another, a watcher on the
//! third, and an owner killed → `Lost` → the key run again elsewhere.
//!
//! ```text
//! cargo run -p keyrunner-redis --example cluster
//! ```
//!
//! It starts its own `redis-server` on a unix socket in a temporary directory (install it with
//! `apt-get install -y --no-install-recommends redis-server`). The replicas live in this one
//! process, each with its own connections; replica A has a runtime of its own, so that it can
//! die without a word, as a crashed process would.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keyrunner_redis::testing::{self as server, RedisServer};
use keyrunner_redis::{ClusterRepository, Delta, Event, Reason, State, TaskContext};

type Agents = ClusterRepository<String, String, String>;

const TTL: Duration = Duration::from_secs(2);

/// A reply streamed token by token, as an agent would: each token a delta, folded into the reply
/// so far.
fn reply(cx: TaskContext<String>) -> impl futures::Stream<Item = Delta<String>> + Send {
    let fence = cx.run_id();
    let signal = cx.abort_signal().clone();
    let started = Instant::now();
    signal
        .on_abort(move |reason| {
            println!(
                "      [owner] {fence}: abort signal fired ({}) {} ms into the run",
                reason.map_or("no reason", Reason::as_str),
                started.elapsed().as_millis()
            );
        })
        .detach();
    futures::stream::iter(["Hello", ",", " world", "!"]).then(|token| async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Delta(token.to_owned())
    })
}

async fn connect(server: &RedisServer) -> Agents {
    ClusterRepository::builder(server.url())
        .namespace("example")
        .lease_ttl(TTL)
        .connect()
        .await
        .expect("connect to the private redis-server")
}

fn show(event: &Event<String, String>) -> String {
    match event {
        Event::State {
            state: State::Running { progress, .. },
            ..
        } => format!("running, reply so far {:?}", progress.as_deref()),
        Event::State {
            state: State::Idle { last, progress },
            ..
        } => format!("idle after {last:?}, reply {:?}", progress.as_deref()),
        Event::Delta { delta, .. } => format!("delta {:?}", **delta),
    }
}

fn main() -> ExitCode {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("this example needs redis-server: {}", server::INSTALL_HINT);
        return ExitCode::FAILURE;
    }
    let server = RedisServer::start();
    println!("private Redis on {}", server.socket().display());
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(demo(&server));
    ExitCode::SUCCESS
}

async fn demo(server: &RedisServer) {
    let key = "conversation-42".to_owned();
    // Replica A on a runtime of its own, so it can die like a crashed process.
    let a_runtime = tokio::runtime::Runtime::new().expect("replica A's runtime");
    let url = server.url();
    let a = a_runtime
        .spawn(async move {
            Agents::builder(url)
                .namespace("example")
                .lease_ttl(TTL)
                .connect()
                .await
                .expect("connect to the private redis-server")
        })
        .await
        .expect("replica A connects");
    let b = connect(server).await;
    let c = connect(server).await;
    println!(
        "replicas A {}, B {}, C {} (lease TTL {TTL:?})\n",
        a.replica_id(),
        b.replica_id(),
        c.replica_id()
    );

    // C watches the key: every transition, from every replica, in order.
    let started = Instant::now();
    let _watching = c
        .listen(
            key.clone(),
            move |item| match item {
                Ok(event) => println!(
                    "      [C sees] +{:>4} ms  at {:<20} {}",
                    started.elapsed().as_millis(),
                    event.position().to_string(),
                    show(event)
                ),
                Err(error) => println!("      [C sees] error: {error}"),
            },
            true,
        )
        .await
        .expect("watch the key");

    println!("A runs {key}:");
    // A's runs are driven on A's runtime (it was connected there), whoever asks.
    let handle = a.run(key.clone(), reply).await.expect("the key is idle");
    tokio::time::sleep(Duration::from_millis(400)).await;

    println!("B stops it (B does not run it):");
    let stopped = Instant::now();
    let run = b
        .stop(&key, Reason::from("user pressed stop"))
        .await
        .expect("it runs");
    println!(
        "  B's stop of {run} returned after {} µs",
        stopped.elapsed().as_micros()
    );
    println!("  C reads: {}", show(&c.event(&key).await.expect("read")));
    println!("  A's handle: {:?}\n", handle.await);

    println!("A runs {key} again, then A dies (its runtime shuts down, nothing is released):");
    let handle = a
        .run(key.clone(), |cx| {
            reply(cx).chain(futures::stream::pending())
        })
        .await
        .expect("the key is idle");
    let first = handle.run_id();
    tokio::time::sleep(Duration::from_millis(700)).await;
    std::mem::forget((a, handle));
    a_runtime.shutdown_background();
    let died = Instant::now();
    loop {
        if c.state(&key).await.expect("read").is_idle() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "  the key is idle with Lost {} ms after A died (bound: TTL + TTL/4 = {} ms)\n",
        died.elapsed().as_millis(),
        (TTL + TTL / 4).as_millis()
    );

    println!("B runs {key} now:");
    let handle = b.run(key.clone(), reply).await.expect("the key is idle");
    println!("  fence {} > the dead owner's {}", handle.run_id(), first);
    println!("  B's handle: {:?}", handle.await);
    tokio::time::sleep(Duration::from_millis(50)).await;
}
