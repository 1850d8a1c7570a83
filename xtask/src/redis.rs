//! `cargo xtask faults [--long]`, and the `redis-server` the Redis tests need.
//!
//! The keyrunner-redis tests start private `redis-server` processes (never a shared one) and
//! fail when the binary is missing; [`install::debian_packages`] installs Debian's package first.

use crate::{Result, cargo, install, run};

/// How long the nemesis runs in `faults` (CI) and in `faults --long`.
const NEMESIS_SECS: u64 = 30;
const LONG_NEMESIS_SECS: u64 = 600;

/// The multi-process fault suite of keyrunner-redis: the seeded random nemesis for 30 s (the
/// named scenarios already ran in `test`), or with `long` every scenario and a 600 s nemesis.
/// A failure prints the seed that replays it.
pub(crate) fn faults(long: bool) -> Result {
    install::debian_packages(&[install::REDIS_SERVER])?;
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
