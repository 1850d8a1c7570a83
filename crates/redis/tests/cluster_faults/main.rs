//! The multi-process fault suite: replicas are separate processes (this binary, started again
//! in replica mode), so `kill -9` and `SIGSTOP` are real; Redis is a private server per
//! scenario, killed, restarted and paused for real. A checker compares Redis's audit list with
//! what every replica reported (`checker.rs`).
//!
//! `cargo test -p keyrunner-redis --test cluster_faults [-- FILTER]` runs every named scenario and the
//! nemesis for `KEYRUNNER_NEMESIS_SECS` seconds (5 by default; `cargo xtask faults` runs it for
//! 30, `--long` for 600). `KEYRUNNER_NEMESIS_SEED` replays a nemesis run; every failure prints
//! its seed.

// The suite is its own harness (`harness = false`): the binary is also the replica.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod checker;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod replica;
mod scenarios;

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Scenario = fn() -> String;

static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

const SCENARIOS: [(&str, Scenario); 12] = [
    (
        "d1_racing_runs_from_three_replicas",
        scenarios::racing_runs_from_three_replicas,
    ),
    (
        "d2_a_stale_running_node_changes_nothing",
        scenarios::a_stale_running_node_changes_nothing,
    ),
    (
        "d3_stop_from_another_replica",
        scenarios::stop_from_another_replica,
    ),
    (
        "d5_client_kill_of_the_subscriber_mid_stream",
        scenarios::client_kill_of_the_subscriber_mid_stream,
    ),
    ("d4_kill_9_of_the_owner", scenarios::kill_9_of_the_owner),
    (
        "d4_sigstop_of_the_owner_past_its_lease",
        scenarios::sigstop_of_the_owner_past_its_lease,
    ),
    (
        "d4_short_sigstop_loses_nothing",
        scenarios::short_sigstop_loses_nothing,
    ),
    (
        "d6_redis_restarted_on_its_aof",
        scenarios::redis_restarted_on_its_aof,
    ),
    ("d6_redis_restarted_empty", scenarios::redis_restarted_empty),
    (
        "d4_redis_sigstopped_for_two_ttls",
        scenarios::redis_sigstopped_for_two_ttls,
    ),
    (
        "d4_partition_of_the_owner_from_redis",
        scenarios::partition_of_the_owner_from_redis,
    ),
    (
        "d4_connections_of_the_owner_reset_repeatedly",
        scenarios::connections_of_the_owner_reset_repeatedly,
    ),
];

fn main() -> ExitCode {
    if std::env::var_os("KEYRUNNER_REDIS_REPLICA").is_some() {
        return replica::main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let selected =
        |name: &str| filters.is_empty() || filters.iter().any(|filter| name.contains(filter));
    let nemesis_seconds: u64 = std::env::var("KEYRUNNER_NEMESIS_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("KEYRUNNER_NEMESIS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| u64::from(since.subsec_nanos()) ^ since.as_secs())
        });
    let nemesis_name = format!("nemesis (seed {seed}, {nemesis_seconds} s)");

    let mut tests: Vec<(String, Box<dyn Fn() -> String>)> = SCENARIOS
        .iter()
        .map(|(name, scenario)| {
            (
                (*name).to_owned(),
                Box::new(*scenario) as Box<dyn Fn() -> String>,
            )
        })
        .collect();
    tests.push((
        "nemesis".to_owned(),
        Box::new(move || scenarios::nemesis(seed, Duration::from_secs(nemesis_seconds))),
    ));

    if args.iter().any(|arg| arg == "--list") {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }

    let tests: Vec<_> = tests
        .into_iter()
        .filter(|(name, _)| selected(name))
        .collect();
    // A failing scenario's message and location are printed once, in the summary.
    panic::set_hook(Box::new(|info| {
        if std::thread::current().name() == Some("main") {
            *LAST_PANIC.lock().unwrap() = info.to_string();
        }
    }));
    println!("\nrunning {} fault scenarios", tests.len());
    let mut failed = Vec::new();
    let started = Instant::now();
    for (name, test) in &tests {
        let shown = if name == "nemesis" {
            nemesis_name.clone()
        } else {
            name.clone()
        };
        let began = Instant::now();
        match panic::catch_unwind(AssertUnwindSafe(test)) {
            Ok(summary) => println!(
                "test {shown} ... ok ({:.1} s): {summary}",
                began.elapsed().as_secs_f64()
            ),
            Err(_) => {
                println!(
                    "test {shown} ... FAILED ({:.1} s)",
                    began.elapsed().as_secs_f64()
                );
                failed.push((shown, LAST_PANIC.lock().unwrap().clone()));
            }
        }
    }
    println!(
        "\nfault scenarios: {} passed; {} failed; finished in {:.1} s",
        tests.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (name, message) in &failed {
        println!("\n---- {name} ----\n{message}");
    }
    println!(
        "\nto replay the nemesis: KEYRUNNER_NEMESIS_SEED={seed} cargo test -p keyrunner-redis --test cluster_faults -- nemesis"
    );
    ExitCode::FAILURE
}
