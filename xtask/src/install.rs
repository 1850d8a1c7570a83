//! Installing what a step needs on a fresh machine: cargo subcommands from crates.io, and
//! Debian packages through `apt-get` when running as root (as CI does).
//!
//! A step calls these before it runs anything, so `cargo xtask <step>` works on a fresh clone
//! on its own; `.ci/run` installs nothing itself.

use std::{
    env, fs,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use crate::{Error, Result, cargo, run};

/// The cargo-deny release this repository's `deny.toml` is written for.
pub(crate) const CARGO_DENY: CargoTool = CargoTool {
    krate: "cargo-deny",
    subcommand: "deny",
    version: "0.20.2",
};

/// A cargo subcommand installed from crates.io with `cargo install --locked`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CargoTool {
    /// The crate on crates.io.
    pub(crate) krate: &'static str,
    /// The subcommand it provides (`cargo <subcommand>`).
    pub(crate) subcommand: &'static str,
    /// The version installed when it is missing.
    pub(crate) version: &'static str,
}

/// Installs `tool` unless `cargo <subcommand> --version` already works. A different installed
/// version is used as it is, with a note.
pub(crate) fn cargo_tool(tool: CargoTool) -> Result {
    let output = cargo()
        .args([tool.subcommand, "--version"])
        .stdin(Stdio::null())
        .output();
    if let Ok(output) = output
        && output.status.success()
    {
        let found = String::from_utf8_lossy(&output.stdout);
        if !found.contains(tool.version) {
            println!(
                "xtask: using {} (this repository is checked with {} {})",
                found.trim(),
                tool.krate,
                tool.version
            );
        }
        return Ok(());
    }
    println!(
        "xtask: {} is not installed; installing {} from crates.io (takes a few minutes)",
        tool.krate, tool.version
    );
    run(cargo().args(["install", "--locked", tool.krate, "--version", tool.version]))
}

/// The Debian packages the workspace's test suites need (a server or a browser they start),
/// installed by the `test`, `faults` and `features` steps before they run any test. Add one
/// line per package; a step of its own that needs more calls [`debian_packages`] with its own
/// list.
pub(crate) const TEST_PACKAGES: &[DebianPackage] = &[
    // keyrunner-redis: every test group starts private servers.
    REDIS_SERVER,
    // The web example's browser test (`crates/keyrunner/tests/web_browser.rs`); the fonts make
    // its screenshots show text.
    DebianPackage {
        name: "chromium",
        program: Some("chromium"),
    },
    DebianPackage {
        name: "chromium-driver",
        program: Some("chromedriver"),
    },
    DebianPackage {
        name: "fonts-liberation",
        program: None,
    },
];

/// The server the keyrunner-redis tests, its fault suite and its example start.
pub(crate) const REDIS_SERVER: DebianPackage = DebianPackage {
    name: "redis-server",
    program: Some("redis-server"),
};

/// [`TEST_PACKAGES`], less the browser when `CHROMEDRIVER` names a driver of the developer's
/// choosing (the browser test then uses it, and `CHROME` for the browser).
pub(crate) fn test_packages() -> Result {
    let own_driver = env::var_os("CHROMEDRIVER").is_some();
    let packages: Vec<DebianPackage> = TEST_PACKAGES
        .iter()
        .filter(|package| !(own_driver && package.name.starts_with("chromium")))
        .copied()
        .collect();
    debian_packages(&packages)
}

/// A Debian package a step needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DebianPackage {
    /// The package name, as `apt-get install` takes it.
    pub(crate) name: &'static str,
    /// A program the package puts on `PATH`. When given, finding it on `PATH` is enough (so a
    /// machine that has it by other means needs no Debian package); otherwise `dpkg-query`
    /// decides.
    pub(crate) program: Option<&'static str>,
}

/// Makes sure every package is there. Missing ones are installed with `apt-get` when running
/// as root (once `apt-get update` has run, at most once per process); otherwise the error names
/// the command that would install them.
///
/// ```text
/// install::debian_packages(&[
///     DebianPackage { name: "redis-server", program: Some("redis-server") },
///     DebianPackage { name: "fonts-liberation", program: None },
/// ])?;
/// ```
pub(crate) fn debian_packages(packages: &[DebianPackage]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|package| !is_installed(package))
        .map(|package| package.name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() || !on_path("apt-get") {
        return Err(Error::Other(format!(
            "missing: {}; install them (on Debian: `sudo {command}`) and run again",
            missing.join(", ")
        )));
    }
    println!("xtask: installing {}", missing.join(", "));
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if !UPDATED.swap(true, Ordering::SeqCst) {
        run(apt().args(["update", "-q"]))?;
    }
    run(apt()
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

fn is_installed(package: &DebianPackage) -> bool {
    if let Some(program) = package.program {
        return on_path(program);
    }
    if !on_path("dpkg-query") {
        // Not Debian: only programs can be checked, and the developer brings the rest.
        return true;
    }
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Status}", package.name])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success() && output.stdout == b"installed")
}

/// Whether an executable file named `program` is in a directory of `PATH`.
pub(crate) fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| is_executable(&dir.join(program))))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Whether this process runs as root (user id 0, from `/proc/self/status`).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_only_when_executable() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-anywhere"));
    }

    #[test]
    fn a_package_with_its_program_on_path_counts_as_installed() {
        let package = DebianPackage {
            name: "dash",
            program: Some("sh"),
        };
        assert!(is_installed(&package));
        let absent = DebianPackage {
            name: "no-such-package-anywhere",
            program: None,
        };
        assert!(!is_installed(&absent));
    }
}
