//! `cargo xtask bench`: the ratio table read back from criterion's estimates.
//!
//! Each row divides keyrunner's median time by its peer's, both measured in the same
//! `cargo bench` run, and compares the ratio with the target from the benchmark issue: the
//! runner's cycle and run + stop against the bare spawn floor (`spawn_join`, `spawn_abort`),
//! the lower layers against the peer a user would pick instead. Rows without a target show
//! the hand-rolled runner, the other runtimes and the larger key counts.

use std::fs;
use std::path::Path;

/// One ratio: `ours / peer`, both per element (per listener, per key, per consumer).
struct Ratio {
    what: &'static str,
    ours: &'static str,
    ours_elements: f64,
    peer: &'static str,
    peer_elements: f64,
    /// The largest ratio that meets the target; `None` for rows shown for context.
    target: Option<f64>,
}

const fn ratio(what: &'static str, ours: &'static str, peer: &'static str, target: f64) -> Ratio {
    Ratio {
        what,
        ours,
        ours_elements: 1.0,
        peer,
        peer_elements: 1.0,
        target: Some(target),
    }
}

const fn context(what: &'static str, ours: &'static str, peer: &'static str) -> Ratio {
    Ratio {
        what,
        ours,
        ours_elements: 1.0,
        peer,
        peer_elements: 1.0,
        target: None,
    }
}

/// Every row of the table, by criterion benchmark id (`group/function[/parameter]`).
const RATIOS: &[Ratio] = &[
    ratio(
        "subject `next`, 1,000 listeners",
        "fanout_next/keyrunner/1000",
        "fanout_next/vec_loop/1000",
        1.5,
    ),
    ratio(
        "subject `next`, 1 listener",
        "fanout_next/keyrunner/1",
        "fanout_next/broadcast/1",
        0.7,
    ),
    context(
        "subject `next`, 1,000 listeners",
        "fanout_next/keyrunner/1000",
        "fanout_next/broadcast/1000",
    ),
    context(
        "subject `next`, 1,000 listeners",
        "fanout_next/keyrunner/1000",
        "fanout_next/mutex_slab/1000",
    ),
    ratio(
        "stream wake-up, 1,000 consumers",
        "stream_wakeup/keyrunner/1000",
        "stream_wakeup/watch/1000",
        1.0,
    ),
    ratio(
        "pub-sub `next`, unwatched key",
        "pubsub_next_unwatched/keyrunner",
        "pubsub_next_unwatched/mutex_hashmap",
        1.0,
    ),
    ratio(
        "pub-sub listen + unsubscribe, fresh key",
        "pubsub_listen_unsubscribe/keyrunner",
        "pubsub_listen_unsubscribe/dashmap",
        1.0,
    ),
    ratio(
        "runner cycle, 1 key, current_thread",
        "runner_cycle_current_thread/keyrunner/1",
        "runner_cycle_current_thread/spawn_join/1",
        2.0,
    ),
    ratio(
        "runner run + stop, current_thread",
        "runner_stop_current_thread/keyrunner",
        "runner_stop_current_thread/spawn_abort",
        2.0,
    ),
    context(
        "runner cycle, 1 key, current_thread",
        "runner_cycle_current_thread/keyrunner/1",
        "runner_cycle_current_thread/hand_rolled/1",
    ),
    context(
        "runner run + stop, current_thread",
        "runner_stop_current_thread/keyrunner",
        "runner_stop_current_thread/hand_rolled",
    ),
    Ratio {
        what: "runner cycle per key, 10,000 keys vs 1 key",
        ours: "runner_cycle_current_thread/keyrunner/10000",
        ours_elements: 10_000.0,
        peer: "runner_cycle_current_thread/keyrunner/1",
        peer_elements: 1.0,
        target: None,
    },
    Ratio {
        what: "runner cycle per key, 100 keys, current_thread",
        ours: "runner_cycle_current_thread/keyrunner/100",
        ours_elements: 100.0,
        peer: "runner_cycle_current_thread/hand_rolled/100",
        peer_elements: 100.0,
        target: None,
    },
    Ratio {
        what: "runner cycle per key, 10,000 keys, current_thread",
        ours: "runner_cycle_current_thread/keyrunner/10000",
        ours_elements: 10_000.0,
        peer: "runner_cycle_current_thread/hand_rolled/10000",
        peer_elements: 10_000.0,
        target: None,
    },
    context(
        "runner cycle, 1 key, multi_thread (2 workers)",
        "runner_cycle_multi_thread/keyrunner/1",
        "runner_cycle_multi_thread/hand_rolled/1",
    ),
    context(
        "runner cycle, 100 keys, multi_thread (2 workers)",
        "runner_cycle_multi_thread/keyrunner/100",
        "runner_cycle_multi_thread/hand_rolled/100",
    ),
    context(
        "runner run + stop, multi_thread (2 workers)",
        "runner_stop_multi_thread/keyrunner",
        "runner_stop_multi_thread/hand_rolled",
    ),
    context(
        "runner cycle, 1 key, smol",
        "runner_cycle_smol/keyrunner/1",
        "runner_cycle_smol/hand_rolled/1",
    ),
    context(
        "runner cycle, 100 keys, smol",
        "runner_cycle_smol/keyrunner/100",
        "runner_cycle_smol/hand_rolled/100",
    ),
    context(
        "runner run + stop, smol",
        "runner_stop_smol/keyrunner",
        "runner_stop_smol/hand_rolled",
    ),
];

/// The ratio table, and the benchmark ids it found no estimate for.
pub(crate) struct Table {
    /// Markdown; rows whose estimates are missing say so.
    pub(crate) markdown: String,
    /// Every benchmark id named by [`RATIOS`] that has no estimate in `target/criterion`.
    pub(crate) missing: Vec<&'static str>,
}

/// The table, read from `target/criterion`.
pub(crate) fn ratio_table(root: &Path) -> Table {
    let criterion = root.join("target").join("criterion");
    let mut out = String::from(
        "| measurement | keyrunner | peer | ratio | target | verdict |\n|---|---|---|---|---|---|\n",
    );
    let mut missing = Vec::new();
    for row in RATIOS {
        let ours = median_ns(&criterion, row.ours).map(|ns| ns / row.ours_elements);
        let peer = median_ns(&criterion, row.peer).map(|ns| ns / row.peer_elements);
        for (id, estimate) in [(row.ours, ours), (row.peer, peer)] {
            if estimate.is_none() && !missing.contains(&id) {
                missing.push(id);
            }
        }
        let (ratio, verdict) = match (ours, peer) {
            (Some(ours), Some(peer)) => {
                let ratio = ours / peer;
                let verdict = match row.target {
                    Some(target) if ratio <= target => "met",
                    Some(_) => "missed",
                    None => "context",
                };
                (format!("{ratio:.2}×"), verdict)
            }
            _ => ("no estimate".to_owned(), "not run"),
        };
        let target = row.target.map_or("—".to_owned(), |t| format!("≤ {t}×"));
        out.push_str(&format!(
            "| {} | `{}` {} | `{}` {} | {ratio} | {target} | {verdict} |\n",
            row.what,
            row.ours,
            time(ours),
            row.peer,
            time(peer),
        ));
    }
    Table {
        markdown: out,
        missing,
    }
}

fn time(ns: Option<f64>) -> String {
    match ns {
        None => String::new(),
        Some(ns) if ns >= 1_000_000.0 => format!("{:.2} ms", ns / 1_000_000.0),
        Some(ns) if ns >= 1_000.0 => format!("{:.2} µs", ns / 1_000.0),
        Some(ns) => format!("{ns:.1} ns"),
    }
}

/// The median of the last run of benchmark `id`, in nanoseconds.
fn median_ns(criterion: &Path, id: &str) -> Option<f64> {
    let path = criterion.join(id).join("new").join("estimates.json");
    let json = fs::read(path).ok()?;
    point_estimate(&json, "median")
}

/// `estimates.json` holds `{"median": {"point_estimate": <number>, ...}, ...}`.
fn point_estimate(json: &[u8], statistic: &str) -> Option<f64> {
    let estimates: serde_json::Value = serde_json::from_slice(json).ok()?;
    estimates.get(statistic)?.get("point_estimate")?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_estimate_reads_the_named_statistic() {
        let json = br#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":2.5,"standard_error":0.1},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":1.25e3,"standard_error":0.1}}"#;
        assert_eq!(point_estimate(json, "mean"), Some(2.5));
        assert_eq!(point_estimate(json, "median"), Some(1250.0));
        assert_eq!(point_estimate(json, "slope"), None);
        assert_eq!(point_estimate(b"not json", "median"), None);
    }

    #[test]
    fn missing_estimates_are_reported_not_fatal() {
        let table = ratio_table(Path::new("/nonexistent"));
        assert!(table.markdown.contains("no estimate"));
        assert!(!table.markdown.contains("| met |"));
        assert!(table.missing.contains(&"fanout_next/keyrunner/1000"));
        let ids: usize = RATIOS.len() * 2;
        assert!(
            table.missing.len() < ids,
            "ids shared by rows are listed once"
        );
    }
}
