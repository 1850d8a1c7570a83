//! The real browser that the web example's browser test drives
//! (`crates/keyrunner/tests/web_browser.rs`): Debian's `chromium` and `chromium-driver`, plus
//! `fonts-liberation` so that its screenshots show text.
//!
//! `cargo xtask test` calls [`ensure_installed`] first. Whatever is missing is installed with
//! `apt-get` when running as root (as CI does); otherwise the error says what to install. The
//! test itself fails, never skips, without a browser.

use std::env;
use std::process::{Command, Stdio};

use crate::{Error, Result, run};

/// The Debian packages the browser test needs.
pub(crate) const PACKAGES: [&str; 3] = ["chromium", "chromium-driver", "fonts-liberation"];

/// Installs whichever of [`PACKAGES`] is missing, or explains how to.
///
/// Does nothing when `CHROMEDRIVER` names a driver of the developer's choosing.
pub(crate) fn ensure_installed() -> Result {
    if let Some(driver) = env::var_os("CHROMEDRIVER") {
        println!(
            "xtask: browser: CHROMEDRIVER={}, not checking Debian packages",
            driver.to_string_lossy()
        );
        return Ok(());
    }
    if !has_dpkg() {
        // Not Debian: the developer brings a browser and its driver.
        return if succeeds(Command::new("chromedriver").arg("--version")) {
            Ok(())
        } else {
            Err(Error::Other(
                "the browser test needs chromium and chromedriver on PATH \
                 (or CHROMEDRIVER naming the driver)"
                    .to_owned(),
            ))
        };
    }
    let missing: Vec<&str> = PACKAGES
        .into_iter()
        .filter(|package| !is_installed(package))
        .collect();
    if missing.is_empty() {
        println!("xtask: browser: {} installed", PACKAGES.join(", "));
        return Ok(());
    }
    let install = install_command(&missing);
    if !is_root() {
        return Err(Error::Other(format!(
            "the browser test needs {}; install with:\n  sudo {}",
            missing.join(", "),
            install.join(" ")
        )));
    }
    println!(
        "xtask: browser: installing {} (about 170 MB to download)",
        missing.join(", ")
    );
    run(apt_get().arg("update").arg("--quiet"))?;
    run(apt_get().args(&install[1..]))
}

/// `apt-get install` of `packages`, without the recommended extras (the fonts are named).
fn install_command<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    let mut command = vec![
        "apt-get",
        "install",
        "--yes",
        "--quiet",
        "--no-install-recommends",
    ];
    command.extend_from_slice(packages);
    command
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn has_dpkg() -> bool {
    succeeds(Command::new("dpkg-query").arg("--version"))
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success() && is_installed_status(&output.stdout))
}

/// Whether `dpkg-query`'s `${db:Status-Abbrev}` says "installed" (`ii`: wanted and installed).
fn is_installed_status(status: &[u8]) -> bool {
    status.starts_with(b"ii")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ii_counts_as_installed() {
        assert!(is_installed_status(b"ii "));
        // Removed with its configuration kept, or never installed.
        assert!(!is_installed_status(b"rc "));
        assert!(!is_installed_status(b"un "));
        assert!(!is_installed_status(b""));
    }

    #[test]
    fn install_command_names_only_the_missing_packages() {
        assert_eq!(
            install_command(&["chromium-driver"]).join(" "),
            "apt-get install --yes --quiet --no-install-recommends chromium-driver"
        );
    }
}
