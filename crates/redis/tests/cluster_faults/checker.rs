//! The checker: the properties of DISTRIBUTED.md, over the audit list (Redis's own record of
//! every write it accepted, in the order it accepted them) and what the replicas reported.
//!
//! - **D1** no key is acquired while a run holds it; every acknowledged run was acquired.
//! - **D2** fences strictly increase per key (across data losses too); every owner write
//!   (renew, progress, finish) is of the run holding the key, before its deadline; no listener
//!   sees a transition Redis did not accept.
//! - **D4** a reap comes within TTL/4 + one round trip of the deadline (outages of Redis
//!   excepted); an owner that demoted itself did so before its Redis deadline; a reaped run's
//!   handle ends `Lost`.
//! - **D5** each listener's sequence strictly increases (a data loss excepted) and ends in the
//!   stored state.
//! - every acquire has exactly one terminal entry (finish, stop, reap) unless Redis lost it.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::{Cluster, Logged, Window};

/// One budgeted round trip on loopback, in ms (DISTRIBUTED.md, "Bounds").
pub const ROUND_TRIP_MS: u64 = 100;

#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub t: u64,
    pub op: String,
    pub key: String,
    pub f: u64,
    pub q: u64,
    #[serde(default)]
    pub d: Option<u64>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub o: Option<String>,
    #[serde(default)]
    pub x: Option<Value>,
}

pub fn parse(lines: &[String]) -> Vec<Entry> {
    lines
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("audit entry {line:?}: {error}"))
        })
        .collect()
}

struct Run {
    fence: u64,
    owner: String,
    deadline_ms: u64,
    terminal: Option<Entry>,
    /// (first, last) sequences of each accepted progress batch.
    batches: Vec<(u64, u64)>,
    acquire_seq: u64,
    /// Redis deadlines in force, by the server time they were set at.
    deadlines: Vec<(u64, u64)>,
    lifetime: usize,
}

#[derive(Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub runs: usize,
    pub reaps: usize,
    pub writes: usize,
    pub stale_writes: usize,
    pub seen: usize,
    pub max_reap_delay_ms: u64,
    /// The longest machine stall that excused part of a reap's delay.
    pub stalled_ms: u64,
}

impl Report {
    fn violation(&mut self, text: String) {
        if self.violations.len() < 50 {
            self.violations.push(text);
        }
    }
}

fn covered(windows: &[Window], from_us: u64, to_us: u64) -> Option<u64> {
    windows
        .iter()
        .filter(|window| window.from_us <= to_us && window.to_us + 1_000 >= from_us)
        .map(|window| window.to_us)
        .max()
}

/// Checks everything; `quiescent` when the scenario ended with every run ended and every
/// listener caught up (then open runs and listeners behind the stored state are violations).
pub fn check(cluster: &Cluster, quiescent: bool) -> Report {
    let mut report = Report::default();
    let ttl_ms = u64::try_from(cluster.ttl.as_millis()).unwrap_or(u64::MAX);
    let mut lifetimes: Vec<Vec<Entry>> = cluster
        .lost_audits
        .iter()
        .map(|lines| parse(lines))
        .collect();
    lifetimes.push(parse(&cluster.audit_lines()));
    let lifetime_count = lifetimes.len();

    let mut runs: HashMap<(String, u64), Run> = HashMap::new();
    let mut last_fence: HashMap<String, u64> = HashMap::new();
    for (lifetime, entries) in lifetimes.iter().enumerate() {
        let mut open: HashMap<String, u64> = HashMap::new();
        let mut seq: HashMap<String, u64> = HashMap::new();
        for entry in entries {
            let key = entry.key.clone();
            let t_ms = entry.t / 1000;
            match entry.op.as_str() {
                "acquire" => {
                    report.runs += 1;
                    if let Some(running) = open.get(&key) {
                        report.violation(format!(
                            "D1: {key} acquired with fence {} while run {running} held it",
                            entry.f
                        ));
                    }
                    if let Some(&previous) = last_fence.get(&key)
                        && entry.f <= previous
                    {
                        report.violation(format!("D2: {key} fence {} after {previous}", entry.f));
                    }
                    if let Some(&previous) = seq.get(&key)
                        && entry.q != previous + 1
                    {
                        report.violation(format!(
                            "{key}: acquire at sequence {} after {previous}",
                            entry.q
                        ));
                    }
                    last_fence.insert(key.clone(), entry.f);
                    open.insert(key.clone(), entry.f);
                    seq.insert(key.clone(), entry.q);
                    let deadline = entry.d.unwrap_or(0);
                    runs.insert(
                        (key, entry.f),
                        Run {
                            fence: entry.f,
                            owner: entry.o.clone().unwrap_or_default(),
                            deadline_ms: deadline,
                            terminal: None,
                            batches: Vec::new(),
                            acquire_seq: entry.q,
                            deadlines: vec![(t_ms, deadline)],
                            lifetime,
                        },
                    );
                }
                "renew" | "progress" | "finish" => {
                    report.writes += 1;
                    if open.get(&key) != Some(&entry.f) {
                        report.stale_writes += 1;
                        report.violation(format!(
                            "D2: {} of {key} by stale fence {} (open: {:?})",
                            entry.op,
                            entry.f,
                            open.get(&key)
                        ));
                        continue;
                    }
                    let Some(run) = runs.get_mut(&(key.clone(), entry.f)) else {
                        continue;
                    };
                    // The finish's own items come just before it, in the same script: same time.
                    if t_ms >= run.deadline_ms {
                        report.violation(format!(
                            "D4: {} of {key} fence {} at {t_ms} ms, after its deadline {}",
                            entry.op, entry.f, run.deadline_ms
                        ));
                    }
                    let previous = seq.get(&key).copied().unwrap_or(0);
                    match entry.op.as_str() {
                        "progress" => {
                            let n = entry.n.unwrap_or(0);
                            if entry.q != previous + n {
                                report.violation(format!(
                                    "{key}: progress of {n} ending at {} after {previous}",
                                    entry.q
                                ));
                            }
                            run.batches.push((previous + 1, entry.q));
                        }
                        "finish" => {
                            if entry.q != previous + 1 {
                                report.violation(format!(
                                    "{key}: finish at {} after {previous}",
                                    entry.q
                                ));
                            }
                            run.terminal = Some(entry.clone());
                            open.remove(&key);
                        }
                        _ => {}
                    }
                    if let Some(d) = entry.d {
                        run.deadline_ms = d;
                        run.deadlines.push((t_ms, d));
                    }
                    seq.insert(key.clone(), entry.q);
                }
                "stop" | "reap" => {
                    if open.get(&key) != Some(&entry.f) {
                        report.violation(format!(
                            "{} of {key} fence {} which does not hold it ({:?})",
                            entry.op,
                            entry.f,
                            open.get(&key)
                        ));
                        continue;
                    }
                    open.remove(&key);
                    let previous = seq.get(&key).copied().unwrap_or(0);
                    if entry.q != previous + 1 {
                        report.violation(format!(
                            "{key}: {} at {} after {previous}",
                            entry.op, entry.q
                        ));
                    }
                    seq.insert(key.clone(), entry.q);
                    let Some(run) = runs.get_mut(&(key.clone(), entry.f)) else {
                        continue;
                    };
                    if entry.op == "reap" {
                        report.reaps += 1;
                        if t_ms < run.deadline_ms {
                            report.violation(format!(
                                "D4: {key} fence {} reaped at {t_ms} before its deadline {}",
                                entry.f, run.deadline_ms
                            ));
                        }
                        // Measured from the deadline, or from the end of a Redis outage that
                        // covered it (no replica can reap while Redis cannot answer).
                        let from = covered(&cluster.redis_outages, run.deadline_ms * 1000, entry.t)
                            .map_or(run.deadline_ms, |end| (end / 1000).max(run.deadline_ms));
                        let delay = t_ms.saturating_sub(from);
                        report.max_reap_delay_ms = report.max_reap_delay_ms.max(delay);
                        let stalled = cluster.stalls.within(from * 1000, entry.t) / 1000;
                        report.stalled_ms = report.stalled_ms.max(stalled);
                        if delay > ttl_ms / 4 + ROUND_TRIP_MS + stalled {
                            report.violation(format!(
                                "D4: {key} fence {} reaped {delay} ms after its deadline {} ms (bound {} ms; {})",
                                entry.f,
                                run.deadline_ms,
                                ttl_ms / 4 + ROUND_TRIP_MS + stalled,
                                cluster.actions_between(run.deadline_ms * 1000 - 2_000_000, entry.t)
                            ));
                        }
                    }
                    run.terminal = Some(entry.clone());
                }
                other => report.violation(format!("unknown audit op {other:?}")),
            }
        }
        if quiescent && lifetime + 1 == lifetime_count {
            for (key, fence) in &open {
                report.violation(format!(
                    "{key} run {fence} has no terminal entry at the end"
                ));
            }
        }
    }

    let events = cluster.events();
    check_replica_reports(cluster, &events, &runs, &mut report);
    check_listeners(cluster, &events, &runs, quiescent, &mut report);
    report
}

fn member(key: &str) -> String {
    serde_json::to_string(key).unwrap()
}

fn check_replica_reports(
    cluster: &Cluster,
    events: &[Logged],
    runs: &HashMap<(String, u64), Run>,
    report: &mut Report,
) {
    let mut demoted: HashMap<(String, u64), u64> = HashMap::new();
    for logged in events {
        let value = &logged.value;
        let replica = &cluster.replicas[logged.replica].id;
        match value["ev"].as_str() {
            Some("run") if value["ok"] == true => {
                let fence = value["fence"].as_u64().unwrap_or(0);
                // Which key: find the acquire by fence and owner.
                let found = runs
                    .values()
                    .any(|run| run.fence == fence && run.owner == *replica);
                if !found {
                    report.violation(format!("D6: replica {replica} was told run {fence} started, but Redis has no such acquire"));
                }
            }
            Some("aborted") => {
                let key = member(value["key"].as_str().unwrap_or_default());
                let fence = value["fence"].as_u64().unwrap_or(0);
                let at = value["at_us"].as_u64().unwrap_or(0);
                if value["reason"] != "lease lost" {
                    continue;
                }
                demoted.insert((key.clone(), fence), at);
                let Some(run) = runs.get(&(key.clone(), fence)) else {
                    continue;
                };
                // Told by Redis (a reap, a stop, or its data lost), rather than demoted by itself.
                let learned = run
                    .terminal
                    .as_ref()
                    .is_some_and(|terminal| terminal.t <= at + 1_000)
                    || (run.lifetime < cluster.lost_audits.len() && run.terminal.is_none());
                let paused = cluster
                    .replica_pauses
                    .iter()
                    .any(|(id, window)| *id == run.owner && window.from_us <= at);
                if learned || paused {
                    continue;
                }
                // It demoted itself: that must come before Redis's deadline in force then.
                let deadline = run
                    .deadlines
                    .iter()
                    .filter(|(set_at, _)| *set_at * 1000 <= at)
                    .map(|(_, deadline)| *deadline)
                    .max()
                    .unwrap_or(run.deadline_ms);
                let ttl_ms = u64::try_from(cluster.ttl.as_millis()).unwrap_or(u64::MAX);
                let stalled = cluster.stalls.within((deadline - ttl_ms / 10) * 1000, at) / 1000;
                if at / 1000 > deadline + stalled {
                    report.violation(format!("D4: {key} run {fence} demoted at {} ms, after its Redis deadline {deadline}", at / 1000));
                }
            }
            Some("ended") => {
                let key = member(value["key"].as_str().unwrap_or_default());
                let fence = value["fence"].as_u64().unwrap_or(0);
                let outcome = &value["outcome"];
                let Some(run) = runs.get(&(key.clone(), fence)) else {
                    continue;
                };
                match &run.terminal {
                    Some(terminal) if terminal.op == "reap" => {
                        if *outcome != json!({"type": "lost"}) {
                            report.violation(format!(
                                "D4: {key} run {fence} was reaped, its handle says {outcome}"
                            ));
                        }
                    }
                    Some(terminal) => {
                        let recorded = terminal.x.clone().unwrap_or(Value::Null);
                        let owner_demoted = demoted.contains_key(&(key.clone(), fence));
                        if *outcome != recorded
                            && !(*outcome == json!({"type": "lost"}) && owner_demoted)
                        {
                            report.violation(format!("{key} run {fence}: handle says {outcome}, Redis recorded {recorded}"));
                        }
                    }
                    None => {
                        if *outcome != json!({"type": "lost"}) {
                            report.violation(format!(
                                "{key} run {fence}: handle says {outcome}, Redis has no end for it"
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_listeners(
    cluster: &Cluster,
    events: &[Logged],
    runs: &HashMap<(String, u64), Run>,
    quiescent: bool,
    report: &mut Report,
) {
    // Per replica and key: the last position seen (run, seq within it) and when.
    let mut last: HashMap<(usize, String), ((u64, u64), u64)> = HashMap::new();
    for logged in events {
        let value = &logged.value;
        if value["ev"] != "seen" {
            continue;
        }
        report.seen += 1;
        let key = member(value["key"].as_str().unwrap_or_default());
        let seq = value["seq"].as_u64().unwrap_or(0);
        let fence = value["fence"].as_u64();
        let position = (fence.unwrap_or(0), seq);
        let at = value["at_us"].as_u64().unwrap_or(0);
        if let Some(&(previous, previous_at)) = last.get(&(logged.replica, key.clone())) {
            // After a data loss the history restarts from what Redis stores, possibly lower;
            // never the same position twice.
            let data_lost_between = covered(&cluster.redis_outages, previous_at, at).is_some()
                && !cluster.lost_audits.is_empty();
            if position <= previous && (!data_lost_between || position == previous) {
                report.violation(format!(
                    "D5: replica {} saw {key} at {position:?} after {previous:?}",
                    logged.replica
                ));
            }
        }
        last.insert((logged.replica, key.clone()), (position, at));
        let Some(fence) = fence else { continue };
        let Some(run) = runs.get(&(key.clone(), fence)) else {
            report.violation(format!(
                "D2: replica {} saw {key} run {fence}, which Redis never started",
                logged.replica
            ));
            continue;
        };
        // Redis's own sequence of this event.
        let global = run.acquire_seq + seq;
        let accepted = match (value["state"].as_str(), value["progress"].is_null()) {
            (Some("running"), true) if value["delta"].is_null() => global == run.acquire_seq,
            (Some("running"), _) => run
                .batches
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&global)),
            (Some("idle"), _) => run
                .terminal
                .as_ref()
                .is_some_and(|terminal| terminal.q == global),
            _ => false,
        };
        if !accepted {
            report.violation(format!(
                "D2/D5: replica {} saw {key} run {fence} at sequence {global} ({value}), which Redis never accepted",
                logged.replica
            ));
        }
    }
    if !quiescent {
        return;
    }
    for ((replica, key), (position, _)) in &last {
        if !cluster.replicas[*replica].alive {
            continue;
        }
        let name: String = serde_json::from_str(key).unwrap();
        let stored = stored_position(cluster, &name);
        if *position != stored {
            report.violation(format!(
                "D5: replica {replica} last saw {key} at {position:?}, Redis stores {stored:?}"
            ));
        }
    }
}

/// The position (run, seq within it) of `key`'s stored state; (0, 0) without history.
pub fn stored_position(cluster: &Cluster, key: &str) -> (u64, u64) {
    let stored = cluster.stored(key);
    let field = |name: &str| stored.get(name).and_then(|value| value.parse::<u64>().ok());
    match (field("f"), field("q"), field("a")) {
        (Some(fence), Some(seq), Some(started)) => (fence, seq - started),
        _ => (0, 0),
    }
}
