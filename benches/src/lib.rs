//! Shared helpers for the keyrunner benchmarks.

/// The `main` of a benchmark binary: runs `criterion`, or, when `KEYRUNNER_BENCH_LOOP` is
/// `"<benchmark id> <iterations>"`, only that measurement's body, `iterations` times, through
/// `instruction_loop` (for instruction counts under `valgrind --tool=callgrind`).
///
/// # Panics
///
/// When `KEYRUNNER_BENCH_LOOP` is set but not of that form.
pub fn criterion_or_loop(instruction_loop: impl FnOnce(&str, u64), criterion: impl FnOnce()) {
    let Ok(spec) = std::env::var("KEYRUNNER_BENCH_LOOP") else {
        criterion();
        return;
    };
    let (id, iterations) = spec
        .rsplit_once(' ')
        .and_then(|(id, n)| Some((id, n.parse().ok()?)))
        .expect("KEYRUNNER_BENCH_LOOP is \"<benchmark id> <iterations>\"");
    instruction_loop(id, iterations);
}
