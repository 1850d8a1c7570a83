//! `cargo xtask`: the project's checks, as one small binary.
//!
//! Every subcommand prints the exact command line before running it and, when
//! a command fails, exits non-zero and prints the failed command again at the
//! end. Each step installs what it needs (a cargo subcommand, a Debian package)
//! when it is missing, so `cargo xtask ci` runs on a fresh clone. Run
//! `cargo xtask help` for the list.

mod bench;
mod features;
mod install;
mod metadata;
mod redis;
mod tidy;

use std::{
    env,
    ffi::OsStr,
    fmt, fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

/// One step of `cargo xtask ci`, also a subcommand of its own.
struct Step {
    name: &'static str,
    run: fn() -> Result,
    about: &'static str,
}

const fn step(name: &'static str, run: fn() -> Result, about: &'static str) -> Step {
    Step { name, run, about }
}

/// Every check, in the order `cargo xtask ci` runs them. A new check is one entry here; its code
/// lives in a file of its own.
const CI: &[Step] = &[
    step(
        "tidy",
        tidy,
        "conventions and claims: headers, deps, MSRV, metadata, changelog",
    ),
    step("fmt", fmt, "cargo fmt --all --check"),
    step(
        "clippy",
        clippy,
        "cargo clippy, all targets and features, warnings denied",
    ),
    step(
        "test",
        test,
        "cargo test --workspace --all-features; installs redis-server and chromium if missing",
    ),
    step(
        "faults",
        || redis::faults(false),
        "the keyrunner-redis fault suite's seeded nemesis for 30 s",
    ),
    step(
        "features",
        features::features,
        "each crate alone, each feature alone; examples run",
    ),
    step(
        "doc",
        doc,
        "cargo doc --workspace --no-deps --all-features, warnings denied",
    ),
    step(
        "loom",
        loom,
        "the loom models (tests/loom.rs), in target/loom",
    ),
    step(
        "proptest",
        proptest,
        "the model tests (tests/model.rs), 10,000 cases, release",
    ),
    step(
        "stress",
        stress,
        "the stress test with 1,000,000 operations, release",
    ),
    step(
        "leaks",
        leaks,
        "the leak check churning 1,000,000 keys, release",
    ),
    step(
        "package",
        features::package,
        "cargo package for every published crate",
    ),
    step("deny", deny, "cargo deny check licenses bans sources"),
    step(
        "bench --quick",
        || bench(true),
        "every benchmark briefly, in dev (no timing verdict)",
    ),
];

/// `ci`, and the commands that are not part of it.
const OTHER_COMMANDS: [&str; 7] = [
    "ci             every step above, in that order",
    "faults --long  the keyrunner-redis fault suite for longer",
    "redis-server   install Debian's redis-server if missing (the keyrunner-redis tests need it)",
    "bench          cargo bench -p keyrunner-benches, the memory example, the ratio table",
    "bench --report the ratio table of the last bench run, without running anything",
    "bench-build    compile every benchmark without running it",
    "help           this message",
];

fn usage() -> String {
    let mut usage = String::from("usage: cargo xtask <command>\n\ncommands:\n");
    for step in CI {
        usage.push_str(&format!("  {:<14} {}\n", step.name, step.about));
    }
    for line in OTHER_COMMANDS {
        usage.push_str(&format!("  {line}\n"));
    }
    usage.pop();
    usage
}

/// Why a subcommand failed; printed once, at the very end.
#[derive(Debug)]
enum Error {
    /// A command ran and failed (or could not be started).
    Command { line: String, why: String },
    /// A check found problems, or the arguments were wrong.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command { line, why } => write!(f, "command failed ({why}):\n  $ {line}"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

type Result<T = (), E = Error> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let joined = args.join(" ");
    let result = match joined.as_str() {
        "" | "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(())
        }
        "ci" => ci(),
        "bench" => bench(false),
        "bench --report" => bench_report(false, false),
        "bench-build" => bench_build(),
        "redis-server" => install::debian_packages(&[install::REDIS_SERVER]),
        "faults --long" => redis::faults(true),
        name => match CI.iter().find(|step| step.name == name) {
            Some(step) => (step.run)(),
            None => Err(Error::Other(format!(
                "unknown arguments: {joined}\n\n{}",
                usage()
            ))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nxtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Every check, in order, stopping at the first failure; prints how long each step took.
fn ci() -> Result {
    let mut timings = Vec::new();
    for step in CI {
        println!("\nxtask: ci: {}", step.name);
        let started = Instant::now();
        let outcome = (step.run)();
        timings.push((step.name, started.elapsed().as_secs_f64()));
        if let Err(error) = outcome {
            eprintln!(
                "\nxtask: ci failed at {}\n{}",
                step.name,
                timing_table(&timings)
            );
            return Err(error);
        }
    }
    println!("\nxtask: ci passed\n{}", timing_table(&timings));
    Ok(())
}

/// `step  12.3s` lines and a total.
fn timing_table(timings: &[(&str, f64)]) -> String {
    let mut table = String::new();
    for (name, seconds) in timings {
        table.push_str(&format!("  {name:<14} {seconds:>7.1}s\n"));
    }
    let total: f64 = timings.iter().map(|(_, seconds)| seconds).sum();
    table.push_str(&format!("  {:<14} {total:>7.1}s", "total"));
    table
}

/// Repository conventions that the compiler and clippy do not check.
fn tidy() -> Result {
    println!("$ cargo xtask tidy");
    let workspace = metadata::Workspace::load()?;
    let problems = tidy::check(&project_root(), &workspace);
    if problems.is_empty() {
        println!("xtask: tidy: ok");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    Err(Error::Other(format!(
        "tidy found {} problem(s)",
        problems.len()
    )))
}

fn fmt() -> Result {
    run(cargo().args(["fmt", "--all", "--check"]))
}

fn clippy() -> Result {
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> Result {
    // A browser for the web example's browser test, redis-server for keyrunner-redis.
    install::test_packages()?;
    run(cargo().args(["test", "--workspace", "--all-features"]))
}

fn doc() -> Result {
    run(cargo()
        .args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings"))
}

/// Runs each crate's loom models in a separate target directory, so switching
/// `--cfg loom` on and off does not rebuild the normal target.
fn loom() -> Result {
    let root = project_root();
    let models = packages_with_test("loom")?;
    if models.is_empty() {
        println!("xtask: loom: no crate has a tests/loom.rs");
        return Ok(());
    }
    let rustflags = match env::var("RUSTFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} --cfg loom"),
        _ => "--cfg loom".to_owned(),
    };
    let preemptions = env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "2".to_owned());
    for package in models {
        run(cargo()
            .args(["test", "--release", "--test", "loom", "-p", &package])
            .env("RUSTFLAGS", &rustflags)
            .env("LOOM_MAX_PREEMPTIONS", &preemptions)
            .env("CARGO_TARGET_DIR", root.join("target").join("loom")))?;
    }
    Ok(())
}

/// The model-based property tests at full size; `cargo test` runs a smaller count.
fn proptest() -> Result {
    for package in packages_with_test("model")? {
        run(cargo()
            .args(["test", "--release", "--test", "model", "-p", &package])
            .env("KEYRUNNER_PROPTEST_CASES", "10000"))?;
    }
    Ok(())
}

/// The members that have an integration test named `test` (`tests/<test>.rs`).
fn packages_with_test(test: &str) -> Result<Vec<String>> {
    let workspace = metadata::Workspace::load()?;
    Ok(workspace
        .members
        .iter()
        .filter(|package| package.targets_of("test").any(|target| target.name == test))
        .map(|package| package.name.clone())
        .collect())
}

/// The multi-threaded stress test at full size; `cargo test` runs a smaller count.
fn stress() -> Result {
    run(cargo()
        .args([
            "test",
            "--release",
            "--all-features",
            "--test",
            "stress",
            "-p",
            "keyrunner",
        ])
        .env("KEYRUNNER_STRESS_OPS", "1000000"))
}

/// The leak check at full size; `cargo test` churns fewer keys.
fn leaks() -> Result {
    run(cargo()
        .args([
            "test",
            "--release",
            "--all-features",
            "--test",
            "leaks",
            "-p",
            "keyrunner",
        ])
        .env("KEYRUNNER_LEAK_KEYS", "1000000"))
}

/// Licence, ban and source policy from `deny.toml`. Advisories need the
/// RustSec database, which is fetched over git; they are not checked here.
fn deny() -> Result {
    install::cargo_tool(install::CARGO_DENY)?;
    run(cargo().args(["deny", "check", "licenses", "bans", "sources"]))
}

/// The criterion suite, then the memory binary, then the ratio table (also written to
/// `target/criterion/ratios.md`).
///
/// `quick` is a smoke test that cannot fail on timing: every benchmark runs briefly, the memory
/// binary at a small size, and every row of the ratio table must find its estimates. It builds
/// in the `dev` profile with the features `test` used (`--workspace --all-features`), so it
/// reuses that build instead of compiling every dependency again with optimizations.
fn bench(quick: bool) -> Result {
    let mut cmd = cargo();
    if quick {
        cmd.args(["bench", "--workspace", "--all-features", "--profile", "dev"]);
        // `--bench '*'` selects the benchmark targets only, and keeps the arguments after `--`
        // away from the libtest harness of the libraries, which does not understand them.
        cmd.args(["--bench", "*", "--"]);
        cmd.args(["--warm-up-time", "0.1", "--measurement-time", "0.2"]);
        // Criterion's bootstrap (100,000 resamples by default) dominates an unoptimized run;
        // 1,000 still give every benchmark its estimates.
        cmd.args(["--sample-size", "10", "--nresamples", "1000", "--noplot"]);
    } else {
        cmd.args(["bench", "-p", "keyrunner-benches"]);
    }
    run(&mut cmd)?;
    if quick {
        // `cargo run` takes one package, whose features would differ from the build above.
        let memory = built_example("memory", &["--workspace", "--all-features"])?;
        run(Command::new(memory)
            .arg("--quick")
            .current_dir(project_root()))?;
    } else {
        run(cargo().args([
            "run",
            "--release",
            "-p",
            "keyrunner-benches",
            "--example",
            "memory",
        ]))?;
    }
    bench_report(quick, true)
}

/// Builds example `name` (dev profile) with `args` and returns the path of its executable.
fn built_example(name: &str, args: &[&str]) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--example",
        name,
        "--message-format=json-render-diagnostics",
    ])
    .args(args)
    .stderr(std::process::Stdio::inherit());
    let line = command_line(&cmd);
    println!("$ {line}");
    let output = cmd.output().map_err(|error| Error::Command {
        line: line.clone(),
        why: format!("could not start: {error}"),
    })?;
    if !output.status.success() {
        return Err(Error::Command {
            line,
            why: output.status.to_string(),
        });
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|message| serde_json::from_str::<serde_json::Value>(message).ok())
        .filter(|message| message["target"]["name"] == name)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| Error::Other(format!("`{line}` reported no executable for `{name}`")))
}

/// Prints the ratio table from the estimates criterion left in `target/criterion`, and writes
/// it to `target/criterion/ratios.md`. Right after a run (`just_ran`), a row without an estimate
/// is an error: the table names a benchmark that no longer exists.
fn bench_report(quick: bool, just_ran: bool) -> Result {
    let table = bench::ratio_table(&project_root());
    if quick {
        println!("\nxtask: bench --quick: a smoke run; these ratios are not measurements\n");
    } else {
        println!("\nxtask: bench: ratios (median over median, same run)\n");
    }
    println!("{}", table.markdown);
    let path = project_root()
        .join("target")
        .join("criterion")
        .join("ratios.md");
    fs::write(&path, &table.markdown)
        .map_err(|error| Error::Other(format!("{}: cannot write: {error}", path.display())))?;
    if just_ran && !table.missing.is_empty() {
        return Err(Error::Other(format!(
            "the ratio table (xtask/src/bench.rs) names benchmarks the run did not measure: {}",
            table.missing.join(", ")
        )));
    }
    Ok(())
}

fn bench_build() -> Result {
    run(cargo().args(["bench", "--workspace", "--all-features", "--no-run"]))
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A cargo command run from the project root, using the cargo that runs us.
fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// Prints the command line, runs it, prints how long it took, and turns a failure into an
/// error that repeats the command line.
fn run(cmd: &mut Command) -> Result {
    let line = command_line(cmd);
    println!("$ {line}");
    let started = Instant::now();
    match cmd.status() {
        Ok(status) if status.success() => {
            println!("xtask: {:.1}s: {line}", started.elapsed().as_secs_f64());
            Ok(())
        }
        Ok(status) => Err(Error::Command {
            line,
            why: status.to_string(),
        }),
        Err(error) => Err(Error::Command {
            line,
            why: format!("could not start: {error}"),
        }),
    }
}

/// `KEY=value program args...`, as one would type it into a shell. The
/// program is shown by its file name (`cargo`, not the full `$CARGO` path).
fn command_line(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            ));
        }
    }
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    words.push(program.to_string_lossy().into_owned());
    words.extend(
        cmd.get_args()
            .map(OsStr::to_string_lossy)
            .map(|arg| shell_quote(&arg)),
    );
    words.join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_shows_env_program_name_and_quoted_args() {
        let mut cmd = Command::new("/opt/toolchain/bin/cargo");
        cmd.args(["bench", "--bench", "*", "--", "--warm-up-time", "0.1"])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            command_line(&cmd),
            "RUSTDOCFLAGS='-D warnings' cargo bench --bench '*' -- --warm-up-time 0.1"
        );
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("--cfg"), "--cfg");
    }

    #[test]
    fn failed_command_error_repeats_the_command_line() {
        let error = Error::Command {
            line: "cargo fmt --all --check".to_owned(),
            why: "exit status: 1".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "command failed (exit status: 1):\n  $ cargo fmt --all --check"
        );
    }
}
