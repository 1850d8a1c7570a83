//! `cargo xtask faults [--long]`, and the `redis-server` the Redis tests need.
//!
//! The keyrunner-redis tests start private `redis-server` processes (never a shared one) and
//! fail when the binary is missing; CI installs Debian's package first (`apt-get`, as root).

use std::process::{Command, Stdio};

use crate::{Error, Result, cargo, run};

/// How long the nemesis runs in `faults` (CI) and in `faults --long`.
const NEMESIS_SECS: u64 = 30;
const LONG_NEMESIS_SECS: u64 = 600;

/// Installs Debian's `redis-server` unless one is on the `PATH` already.
pub(crate) fn ensure_server() -> Result {
    let version = Command::new("redis-server")
        .arg("--version")
        .stderr(Stdio::null())
        .output();
    if let Some(output) = version.ok().filter(|output| output.status.success()) {
        let version = String::from_utf8_lossy(&output.stdout);
        println!("xtask: redis-server: {}", version.trim());
        return Ok(());
    }
    println!("xtask: redis-server is missing; installing Debian's package");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "redis-server",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .map_err(|error| {
        Error::Other(format!(
            "{error}\nxtask: the keyrunner-redis tests need redis-server: \
             apt-get install -y --no-install-recommends redis-server"
        ))
    })
}

/// The multi-process fault suite of keyrunner-redis: the seeded random nemesis for 30 s (the
/// named scenarios already ran in `test`), or with `long` every scenario and a 600 s nemesis.
/// A failure prints the seed that replays it.
pub(crate) fn faults(long: bool) -> Result {
    ensure_server()?;
    let mut cmd = cargo();
    // `--workspace --all-features` as in `test`, so nothing is rebuilt.
    cmd.args([
        "test",
        "--workspace",
        "--all-features",
        "--test",
        "cluster_faults",
        "--",
    ]);
    if long {
        cmd.env("KEYRUNNER_NEMESIS_SECS", LONG_NEMESIS_SECS.to_string());
    } else {
        cmd.arg("nemesis")
            .env("KEYRUNNER_NEMESIS_SECS", NEMESIS_SECS.to_string());
    }
    run(&mut cmd)
}
