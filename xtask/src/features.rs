//! `cargo xtask features` and `cargo xtask package`: each published crate on its own, the way a
//! user gets it.
//!
//! `features` tests every published crate alone (`-p`, so no other workspace member turns a
//! feature on for it) with no features, then with each feature alone, and runs the crate's
//! examples in the first combination that has the features they require. `package` builds the
//! `.crate` files crates.io would receive and checks what goes into them.

use std::{
    collections::BTreeSet,
    env, fs,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    Error, Result, cargo, command_line, install,
    metadata::{Package, Workspace},
    run,
};

/// How long one example may run before it counts as hung.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Files every published `.crate` must contain.
const PACKAGED_FILES: [&str; 4] = ["Cargo.toml", "README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// The feature sets a package is tested with: none, each feature alone, and any other set an
/// example requires. Each set is sorted; the list is in that order, without repeats.
pub(crate) fn combinations(package: &Package) -> Vec<Vec<String>> {
    let mut sets: Vec<Vec<String>> = vec![Vec::new()];
    sets.extend(package.features.iter().map(|feature| vec![feature.clone()]));
    for example in package.targets_of("example") {
        let required: BTreeSet<String> = example.required_features.iter().cloned().collect();
        sets.push(required.into_iter().collect());
    }
    let mut seen = BTreeSet::new();
    sets.retain(|set| seen.insert(set.clone()));
    sets
}

/// The examples of `package` to run with exactly the features `set`, and the ones it does not
/// run at all, with the reason given in `[package.metadata.xtask] examples-not-run`.
fn examples_for<'a>(
    package: &'a Package,
    set: &[String],
) -> (Vec<&'a str>, Vec<(&'a str, String)>) {
    let not_run = package
        .xtask_metadata
        .as_ref()
        .and_then(|metadata| metadata.get("examples-not-run"));
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for example in package.targets_of("example") {
        let required: BTreeSet<&String> = example.required_features.iter().collect();
        if required != set.iter().collect() {
            continue;
        }
        match not_run.and_then(|not_run| not_run.get(&example.name)) {
            Some(reason) => skipped.push((
                example.name.as_str(),
                reason.as_str().unwrap_or("no reason given").to_owned(),
            )),
            None => run.push(example.name.as_str()),
        }
    }
    (run, skipped)
}

/// `cargo test -p <crate> --no-default-features [--features <set>]` for every published crate
/// and feature set, each followed by the crate's examples for that set.
pub(crate) fn features() -> Result {
    install::test_packages()?;
    let workspace = Workspace::load()?;
    for package in workspace.published() {
        for set in combinations(package) {
            let mut test = cargo();
            test.args(["test", "-p", &package.name]);
            feature_args(&mut test, &set);
            run(&mut test)?;
            let (examples, skipped) = examples_for(package, &set);
            for name in examples {
                let mut example = cargo();
                example.args(["run", "-p", &package.name, "--example", name]);
                feature_args(&mut example, &set);
                run_with_timeout(&mut example, EXAMPLE_TIMEOUT)?;
            }
            for (name, reason) in skipped {
                println!(
                    "xtask: example `{name}` of {} not run: {reason}",
                    package.name
                );
            }
        }
    }
    Ok(())
}

fn feature_args(cmd: &mut Command, set: &[String]) {
    cmd.arg("--no-default-features");
    if !set.is_empty() {
        cmd.args(["--features", &set.join(",")]);
    }
}

/// `cargo package` for every published crate at once (cargo packages workspace dependencies
/// first and verifies each `.crate` against the ones packaged before it, as if they were on
/// crates.io), then checks each file list for the README and the licence texts.
pub(crate) fn package() -> Result {
    let workspace = Workspace::load()?;
    let names: Vec<&str> = workspace
        .published()
        .map(|package| package.name.as_str())
        .collect();
    forget_unpacked_packages(&names);
    let mut cmd = cargo();
    // `--allow-dirty`: check the working tree as it is, committed or not.
    cmd.args(["package", "--allow-dirty"]);
    for name in &names {
        cmd.args(["-p", name]);
    }
    run(&mut cmd)?;
    let mut missing = Vec::new();
    for name in names {
        let mut list = cargo();
        list.args(["package", "--list", "--allow-dirty", "-p", name]);
        let line = command_line(&list);
        println!("$ {line}");
        let output = list
            .stderr(Stdio::inherit())
            .output()
            .map_err(|error| Error::Command {
                line: line.clone(),
                why: format!("could not start: {error}"),
            })?;
        if !output.status.success() {
            return Err(Error::Command {
                line,
                why: output.status.to_string(),
            });
        }
        let files = String::from_utf8_lossy(&output.stdout);
        for file in PACKAGED_FILES {
            if !files.lines().any(|listed| listed == file) {
                missing.push(format!("{name}: `{file}` is not in the package"));
            }
        }
    }
    if missing.is_empty() {
        println!(
            "xtask: package: every crate ships {}",
            PACKAGED_FILES.join(", ")
        );
        Ok(())
    } else {
        Err(Error::Other(missing.join("\n")))
    }
}

/// Cargo verifies a package against the ones packaged before it through a local registry,
/// which it unpacks under `$CARGO_HOME/registry/src/-<hash>/` and reuses on the next run while
/// the version is unchanged: a second `package` in the same checkout would verify against stale
/// sources. This removes those unpacked copies of our own crates (local registries only).
fn forget_unpacked_packages(names: &[&str]) {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let Some(src) = home.map(|home| home.join("registry").join("src")) else {
        return;
    };
    for registry in fs::read_dir(src).into_iter().flatten().flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for unpacked in fs::read_dir(registry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = unpacked.file_name().to_string_lossy().into_owned();
            if names.iter().any(|name| {
                dir.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            }) {
                let _ = fs::remove_dir_all(unpacked.path());
            }
        }
    }
}

/// Like [`run`], but kills the command if it runs longer than `timeout`.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result {
    let line = command_line(cmd);
    println!("$ {line}");
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .map_err(|error| Error::Command {
            line: line.clone(),
            why: format!("could not start: {error}"),
        })?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Error::Command {
                    line,
                    why: status.to_string(),
                });
            }
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Command {
                    line,
                    why: format!(
                        "still running after {}s, killed (an example must end by itself; list \
                         one that serves forever under `[package.metadata.xtask] \
                         examples-not-run` with a reason)",
                        timeout.as_secs()
                    ),
                });
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(error) => {
                return Err(Error::Command {
                    line,
                    why: error.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::metadata::Target;

    fn example(name: &str, required: &[&str]) -> Target {
        Target {
            name: name.to_owned(),
            kind: "example".to_owned(),
            src_path: PathBuf::from(format!("examples/{name}.rs")),
            required_features: required.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn umbrella() -> Package {
        Package {
            name: "keyrunner".to_owned(),
            features: vec!["serde".to_owned(), "smol".to_owned(), "tokio".to_owned()],
            targets: vec![
                example("plain", &[]),
                example("tokio", &["tokio"]),
                example("both", &["tokio", "smol"]),
                example("web", &["tokio"]),
            ],
            xtask_metadata: Some(serde_json::json!({
                "examples-not-run": { "web": "serves until stopped" }
            })),
            ..Package::default()
        }
    }

    #[test]
    fn combinations_are_none_each_feature_alone_and_example_sets() {
        let sets = combinations(&umbrella());
        let sets: Vec<String> = sets.iter().map(|set| set.join(",")).collect();
        assert_eq!(sets, ["", "serde", "smol", "tokio", "smol,tokio"]);
        let featureless = Package::default();
        assert_eq!(combinations(&featureless), [Vec::<String>::new()]);
    }

    #[test]
    fn each_example_runs_once_with_exactly_its_features_unless_listed_as_not_run() {
        let package = umbrella();
        let set = |features: &[&str]| -> Vec<String> {
            features.iter().map(|f| (*f).to_owned()).collect()
        };
        assert_eq!(examples_for(&package, &set(&[])).0, ["plain"]);
        let (run, skipped) = examples_for(&package, &set(&["tokio"]));
        assert_eq!(run, ["tokio"]);
        assert_eq!(skipped, [("web", "serves until stopped".to_owned())]);
        assert_eq!(examples_for(&package, &set(&["smol", "tokio"])).0, ["both"]);
        assert!(examples_for(&package, &set(&["serde"])).0.is_empty());
    }

    #[test]
    fn a_hung_command_is_killed_and_reported() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let error = run_with_timeout(&mut cmd, Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(error.to_string().contains("killed"), "{error}");
        assert!(run_with_timeout(&mut Command::new("true"), Duration::from_secs(10)).is_ok());
    }
}
