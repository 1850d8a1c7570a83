//! `cargo xtask`: the project's checks, as one std-only binary.
//!
//! Every subcommand prints the exact command line before running it and, when
//! a command fails, exits non-zero and prints the failed command again at the
//! end. Run `cargo xtask help` for the list.

mod bench;
mod browser;
mod redis;
mod tidy;

use std::{
    env,
    ffi::OsStr,
    fmt, fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

/// The cargo-deny release this repository's `deny.toml` is written for.
const CARGO_DENY_VERSION: &str = "0.20.2";

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci            tidy, fmt, clippy, test, faults, doc, loom, proptest, stress, leaks, deny, bench --quick (in that order)
  tidy          repository conventions (crate headers, //! docs, dependency allow-list)
  fmt           cargo fmt --all --check
  clippy        cargo clippy --workspace --all-targets --all-features -- -D warnings
  test          cargo test --workspace --all-features (unit, integration and doc tests;
                installs chromium for the browser test and redis-server for the
                keyrunner-redis tests when missing, as root)
  doc           cargo doc --workspace --no-deps --all-features, warnings denied
  loom          the loom models in crates/*/tests/loom.rs, in target/loom
  proptest      the model-based property tests with 10,000 cases each, in release
  stress        the multi-threaded stress test with 1,000,000 operations, in release
  leaks         the leak check churning 1,000,000 keys, in release
  redis-server  install Debian's redis-server if it is missing (the keyrunner-redis tests need it)
  faults        the keyrunner-redis fault suite's seeded nemesis for 30 s
  faults --long every fault scenario and a 600 s nemesis
  deny          cargo deny check licenses bans sources (installs cargo-deny if missing)
  bench         cargo bench -p keyrunner-benches, the memory example, the ratio table
  bench --quick a short smoke run of every benchmark (never fails on timing)
  bench --report the ratio table of the last bench run, without running anything
  bench-build   compile every benchmark without running it
  help          this message";

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

type Result<T = ()> = std::result::Result<T, Error>;

/// One subcommand, as `ci` runs it.
type Step = fn() -> Result;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        ["ci"] => ci(),
        ["tidy"] => tidy(),
        ["fmt"] => fmt(),
        ["clippy"] => clippy(),
        ["test"] => test(),
        ["doc"] => doc(),
        ["loom"] => loom(),
        ["proptest"] => proptest(),
        ["stress"] => stress(),
        ["leaks"] => leaks(),
        ["redis-server"] => redis::ensure_server(),
        ["faults"] => redis::faults(false),
        ["faults", "--long"] => redis::faults(true),
        ["deny"] => deny(),
        ["bench"] => bench(false),
        ["bench", "--quick"] => bench(true),
        ["bench", "--report"] => bench_report(false),
        ["bench-build"] => bench_build(),
        _ => Err(Error::Other(format!(
            "unknown arguments: {}\n\n{USAGE}",
            args.join(" ")
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nxtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Every check, in order, stopping at the first failure.
fn ci() -> Result {
    // The property, stress and leak suites also run at their default sizes inside `test`; here
    // they run at full size, in release, which takes seconds once built.
    let steps: [(&str, Step); 12] = [
        ("tidy", tidy),
        ("fmt", fmt),
        ("clippy", clippy),
        ("test", test),
        ("faults", || redis::faults(false)),
        ("doc", doc),
        ("loom", loom),
        ("proptest", proptest),
        ("stress", stress),
        ("leaks", leaks),
        ("deny", deny),
        // Builds every benchmark and runs each briefly: a smoke test, never a timing check.
        ("bench --quick", || bench(true)),
    ];
    let mut timings = Vec::new();
    for (name, step) in steps {
        println!("\nxtask: ci: {name}");
        let started = Instant::now();
        let outcome = step();
        timings.push(format!("{name} {:.1}s", started.elapsed().as_secs_f64()));
        if let Err(error) = outcome {
            eprintln!("\nxtask: ci failed at {name}: {}", timings.join(", "));
            return Err(error);
        }
    }
    println!("\nxtask: ci passed: {}", timings.join(", "));
    Ok(())
}

/// Repository conventions that the compiler and clippy do not check.
fn tidy() -> Result {
    println!("$ cargo xtask tidy");
    let problems = tidy::check(&project_root());
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
    // The web example's browser test drives a real browser: install it if missing.
    browser::ensure_installed()?;
    // The keyrunner-redis tests start private redis-servers: install it if missing.
    redis::ensure_server()?;
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
    let models = loom_packages(&root)?;
    if models.is_empty() {
        println!("xtask: loom: no crates/*/tests/loom.rs found");
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
    for package in ["keyrunner-pub-sub", "keyrunner-task-runner-repository"] {
        run(cargo()
            .args(["test", "--release", "--test", "model", "-p", package])
            .env("KEYRUNNER_PROPTEST_CASES", "10000"))?;
    }
    Ok(())
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

/// The package names of the crates that have a `tests/loom.rs`, sorted.
fn loom_packages(root: &Path) -> Result<Vec<String>> {
    let mut packages = Vec::new();
    for dir in tidy::crate_dirs(root) {
        if !dir.join("tests").join("loom.rs").is_file() {
            continue;
        }
        let manifest_path = dir.join("Cargo.toml");
        let manifest = read(&manifest_path)?;
        let name = tidy::package_name(&manifest).ok_or_else(|| {
            Error::Other(format!(
                "{}: no `name = \"...\"` line in [package]",
                manifest_path.display()
            ))
        })?;
        packages.push(name);
    }
    Ok(packages)
}

/// Licence, ban and source policy from `deny.toml`. Advisories need the
/// RustSec database, which is fetched over git; they are not checked here.
fn deny() -> Result {
    let installed = cargo()
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        println!(
            "xtask: cargo-deny is not installed; installing {CARGO_DENY_VERSION} (takes a few minutes)"
        );
        run(cargo().args([
            "install",
            "--locked",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
        ]))?;
    }
    run(cargo().args(["deny", "check", "licenses", "bans", "sources"]))
}

/// The criterion suite, then the memory binary, then the ratio table (also written to
/// `target/criterion/ratios.md`). `quick` runs every benchmark briefly and the memory binary at
/// a small size: a smoke test that the benchmarks still work, which cannot fail on timing.
fn bench(quick: bool) -> Result {
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "keyrunner-benches"]);
    if quick {
        // `--bench '*'` keeps the arguments after `--` away from the library's
        // libtest harness, which does not understand them.
        cmd.args(["--bench", "*", "--"]);
        cmd.args(["--warm-up-time", "0.1", "--measurement-time", "0.2"]);
        cmd.args(["--sample-size", "10", "--noplot"]);
    }
    run(&mut cmd)?;
    let mut memory = cargo();
    memory.args([
        "run",
        "--release",
        "-p",
        "keyrunner-benches",
        "--example",
        "memory",
    ]);
    if quick {
        memory.args(["--", "--quick"]);
    }
    run(&mut memory)?;
    bench_report(quick)
}

/// Prints the ratio table from the estimates criterion left in `target/criterion`, and writes
/// it to `target/criterion/ratios.md`.
fn bench_report(quick: bool) -> Result {
    let table = bench::ratio_table(&project_root());
    if quick {
        println!("\nxtask: bench --quick: a smoke run; these ratios are not measurements\n");
    } else {
        println!("\nxtask: bench: ratios (median over median, same run)\n");
    }
    println!("{table}");
    let path = project_root()
        .join("target")
        .join("criterion")
        .join("ratios.md");
    fs::write(&path, &table)
        .map_err(|error| Error::Other(format!("{}: cannot write: {error}", path.display())))
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

/// Prints the command line, runs it, and turns a failure into an error that
/// repeats the command line.
fn run(cmd: &mut Command) -> Result {
    let line = command_line(cmd);
    println!("$ {line}");
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
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

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map_err(|error| Error::Other(format!("{}: cannot read: {error}", path.display())))
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
