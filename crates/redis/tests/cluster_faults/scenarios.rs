//! The named fault scenarios of DISTRIBUTED.md, and the seeded random nemesis mixing them.
//!
//! Each scenario starts its own Redis and replica processes, does its faults for real (`kill
//! -9`, `SIGSTOP`, `CLIENT KILL`, Redis killed and restarted), asserts what it is about, then
//! settles (every key stopped, every lease gone, every listener caught up) and runs the checker.
//! Waits are watchdogs on reported events; the only sleeps are fault durations (how long
//! something stays paused), never ordering.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::checker::{self, ROUND_TRIP_MS, Report};
use crate::cluster::{Cluster, Logged};
use crate::common::server::Persistence;
use crate::replica::now_us;

/// The lease TTL of every scenario: short, so faults play out in seconds.
pub const TTL: Duration = Duration::from_millis(1000);

/// The repository's default call timeout for [`TTL`].
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

fn run_forever(cluster: &mut Cluster, replica: usize, key: &str) -> u64 {
    let answer = cluster.request(
        replica,
        json!({"cmd": "run", "key": key, "items": null, "every_ms": 10}),
    );
    assert_eq!(
        answer["ok"], true,
        "run {key} on replica {replica}: {answer}"
    );
    answer["fence"].as_u64().unwrap()
}

fn listen(cluster: &mut Cluster, replica: usize, keys: &[&str]) {
    for key in keys {
        let answer = cluster.request(replica, json!({"cmd": "listen", "key": key}));
        assert_eq!(
            answer["ok"], true,
            "listen {key} on replica {replica}: {answer}"
        );
    }
}

fn seen(
    cluster: &Cluster,
    replica: usize,
    key: &str,
    within: Duration,
    what: &str,
    predicate: impl Fn(&Value) -> bool,
) -> Logged {
    cluster.wait_for(within, what, |logged| {
        logged.replica == replica
            && logged.value["ev"] == "seen"
            && logged.value["key"] == key
            && predicate(&logged.value)
    })
}

fn event(cluster: &Cluster, ev: &str, key: &str, fence: u64, within: Duration) -> Logged {
    cluster.wait_for(within, &format!("{ev} of {key} run {fence}"), |logged| {
        logged.value["ev"] == ev
            && logged.value["key"] == key
            && logged.value["fence"] == json!(fence)
    })
}

fn stored_running(cluster: &Cluster) -> u64 {
    let mut conn = cluster.server.connection();
    redis::cmd("ZCARD")
        .arg(format!("{}:leases", cluster.namespace))
        .query(&mut conn)
        .expect("ZCARD of the lease set")
}

/// Ends a scenario: every key stopped from a live replica, every lease gone, every listener of
/// a live replica caught up with the stored state; then the checker, which must find nothing.
pub fn settle(cluster: &mut Cluster, keys: &[&str]) -> Report {
    let deadline = Instant::now() + cluster.ttl * 8;
    loop {
        let live = cluster.live();
        assert!(!live.is_empty(), "no live replica to settle with");
        for key in keys {
            cluster.request(live[0], json!({"cmd": "stop", "key": key}));
        }
        if stored_running(cluster) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "leases still held when settling");
        std::thread::sleep(Duration::from_millis(50));
    }
    let caught_up = Instant::now() + Duration::from_secs(10);
    loop {
        let behind = listeners_behind(cluster, keys);
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < caught_up,
            "listeners never caught up: {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = checker::check(cluster, true);
    assert!(
        report.violations.is_empty(),
        "checker found:\n  {}",
        report.violations.join("\n  ")
    );
    assert_eq!(report.stale_writes, 0);
    report
}

/// A position as the suite reads it: (run, seq within the run).
type Spot = (u64, u64);

/// (replica, key, last position seen, stored position) of each live listener not caught up.
fn listeners_behind(cluster: &Cluster, keys: &[&str]) -> Vec<(usize, String, Spot, Spot)> {
    let events = cluster.events();
    let mut behind = Vec::new();
    for key in keys {
        let stored = checker::stored_position(cluster, key);
        for replica in cluster.live() {
            let last = events.iter().rev().find(|logged| {
                logged.replica == replica
                    && logged.value["ev"] == "seen"
                    && logged.value["key"] == *key
            });
            if let Some(last) = last {
                let seen = (
                    last.value["fence"].as_u64().unwrap_or(0),
                    last.value["seq"].as_u64().unwrap_or(0),
                );
                if seen != stored {
                    behind.push((replica, (*key).to_owned(), seen, stored));
                }
            }
        }
    }
    behind
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// D1: of three replicas racing to run a key, exactly one wins; the others get `Busy` with the
/// winner's fence. (The runs never end by themselves, so a late arrival cannot win after the
/// winner finished.)
pub fn racing_runs_from_three_replicas() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 3);
    let rounds = 30;
    let mut keys = Vec::new();
    for round in 0..rounds {
        let key = format!("race-{round}");
        let ids: Vec<u64> = (0..3)
            .map(|replica| {
                cluster.send(
                    replica,
                    json!({"cmd": "run", "key": key, "items": 3, "every_ms": 1}),
                )
            })
            .collect();
        let answers: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(replica, id)| cluster.answer(replica, "run", *id))
            .collect();
        let winners: Vec<&Value> = answers
            .iter()
            .filter(|answer| answer["ok"] == true)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        let fence = winners[0]["fence"].clone();
        for answer in answers.iter().filter(|answer| answer["ok"] != true) {
            assert_eq!(answer["error"], "busy", "round {round}: {answer}");
            assert_eq!(
                answer["running"], fence,
                "round {round}: a loser must name the winner"
            );
        }
        keys.push(key);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let report = settle(&mut cluster, &keys);
    format!(
        "{rounds} rounds, one winner each; {} runs checked",
        report.runs
    )
}

/// D2: a node taken while run A held the key cannot stop run B that holds it later; and run A,
/// stopped, writes nothing more.
pub fn a_stale_running_node_changes_nothing() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 3);
    listen(&mut cluster, 2, &["k"]);
    let first = run_forever(&mut cluster, 0, "k");
    let node = cluster.request(1, json!({"cmd": "node", "key": "k"}));
    assert_eq!(
        (node["kind"].as_str(), node["fence"].as_u64()),
        (Some("running"), Some(first))
    );
    let stop = cluster.request(2, json!({"cmd": "stop", "key": "k"}));
    assert_eq!(stop["ok"], true, "{stop}");
    event(&cluster, "ended", "k", first, TTL);
    let second = run_forever(&mut cluster, 0, "k");
    assert!(second > first, "fences increase: {second} after {first}");
    let stale = cluster.request(1, json!({"cmd": "node_stop", "node": node["id"]}));
    assert_eq!(
        (stale["ok"].clone(), stale["error"].clone()),
        (json!(false), json!("ended")),
        "{stale}"
    );
    let state = cluster.request(2, json!({"cmd": "state", "key": "k"}));
    assert_eq!(
        (state["state"].as_str(), state["fence"].as_u64()),
        (Some("running"), Some(second)),
        "{state}"
    );
    settle(&mut cluster, &["k"]);
    "the stale node's stop changed nothing".to_owned()
}

/// D3: a stop on another replica idles the key for everyone as soon as it returns, and the
/// owner's signal fires within one round trip. Reports the stop → abort latency.
pub fn stop_from_another_replica() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 3);
    let rounds = 40;
    let mut latencies = Vec::new();
    for round in 0..rounds {
        let key = format!("stop-{round}");
        let fence = run_forever(&mut cluster, 0, &key);
        let stop = cluster.request(1, json!({"cmd": "stop", "key": key}));
        assert_eq!(
            (stop["ok"].clone(), stop["fence"].as_u64()),
            (json!(true), Some(fence)),
            "{stop}"
        );
        let state = cluster.request(2, json!({"cmd": "state", "key": key}));
        assert_eq!(
            state["state"], "idle",
            "visible everywhere once stop returned: {state}"
        );
        assert_eq!(
            state["outcome"],
            json!({"type": "stopped", "reason": "stop"}),
            "{state}"
        );
        let aborted = event(&cluster, "aborted", &key, fence, TTL);
        assert_eq!(aborted.value["reason"], "stop");
        let sent = stop["sent_us"].as_u64().unwrap();
        let at = aborted.value["at_us"].as_u64().unwrap();
        // Time the machine could not run anything (see `Stalls`) is not the repository's.
        latencies.push(
            at.saturating_sub(sent)
                .saturating_sub(cluster.stalls.within(sent, at)),
        );
        let ended = event(&cluster, "ended", &key, fence, TTL);
        assert_eq!(
            ended.value["outcome"],
            json!({"type": "stopped", "reason": "stop"})
        );
    }
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    assert!(p99 <= ROUND_TRIP_MS * 1000, "stop → abort p99 {p99} µs");
    let keys: Vec<String> = (0..rounds).map(|round| format!("stop-{round}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    settle(&mut cluster, &keys);
    format!(
        "stop → abort across processes: p50 {p50} µs, p99 {p99} µs, max {} µs",
        latencies[latencies.len() - 1]
    )
}

/// D5: the subscriber's connection is killed mid-stream; the listener resubscribes, reads the
/// stored state, and ends in it, in order, without duplicates; a stop still reaches the owner.
pub fn client_kill_of_the_subscriber_mid_stream() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 2);
    listen(&mut cluster, 1, &["k", "k2"]);
    let answer = cluster.request(
        0,
        json!({"cmd": "run", "key": "k", "items": 150, "every_ms": 4}),
    );
    let fence = answer["fence"].as_u64().unwrap();
    seen(&cluster, 1, "k", TTL, "the 30th item", |value| {
        value["progress"] == "30"
    });
    assert_eq!(
        cluster.kill_subscribers(),
        2,
        "both replicas' subscriptions were cut"
    );
    let killed_at = now_us();
    let ended = event(&cluster, "ended", "k", fence, TTL * 5);
    assert_eq!(ended.value["outcome"], json!({"type": "completed"}));
    seen(
        &cluster,
        1,
        "k",
        TTL * 3,
        "the run's end after the reconnection",
        |value| value["state"] == "idle" && value["fence"] == json!(fence),
    );
    // The owner's control subscription came back too: a stop reaches it at once.
    let second = run_forever(&mut cluster, 0, "k2");
    assert_eq!(cluster.kill_subscribers(), 2);
    seen(
        &cluster,
        1,
        "k2",
        TTL * 3,
        "k2 seen again after the second kill",
        |value| value["at_us"].as_u64().unwrap_or(0) > killed_at && value["progress"] == "20",
    );
    let stop = cluster.request(1, json!({"cmd": "stop", "key": "k2"}));
    let aborted = event(&cluster, "aborted", "k2", second, TTL);
    let latency = aborted.value["at_us"].as_u64().unwrap() - stop["sent_us"].as_u64().unwrap();
    assert!(
        latency <= ROUND_TRIP_MS * 1000,
        "abort {latency} µs after the stop"
    );
    let report = settle(&mut cluster, &["k", "k2"]);
    format!(
        "{} transitions seen in order across two subscriber kills",
        report.seen
    )
}

/// D4: the owner is `kill -9`ed; every other replica sees the key idle with `Lost` within
/// TTL + TTL/4 + one round trip of its last renewal, and another replica runs it, fenced higher.
pub fn kill_9_of_the_owner() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 3);
    listen(&mut cluster, 1, &["k"]);
    listen(&mut cluster, 2, &["k"]);
    let fence = run_forever(&mut cluster, 0, "k");
    seen(&cluster, 2, "k", TTL, "items of the owner", |value| {
        value["progress"] == "5"
    });
    cluster.kill(0);
    let lost = seen(
        &cluster,
        2,
        "k",
        TTL * 3,
        "the key idle with Lost",
        |value| value["state"] == "idle" && value["outcome"] == json!({"type": "lost"}),
    );
    let last_write = checker::parse(&cluster.audit_lines())
        .iter()
        .filter(|entry| entry.f == fence && entry.op != "reap")
        .map(|entry| entry.t)
        .max()
        .unwrap();
    let after = lost.value["at_us"]
        .as_u64()
        .unwrap()
        .saturating_sub(last_write)
        / 1000;
    let stalled = cluster
        .stalls
        .within(last_write, lost.value["at_us"].as_u64().unwrap())
        / 1000;
    let bound = 1000 + 250 + ROUND_TRIP_MS + stalled;
    assert!(
        after <= bound,
        "Lost seen {after} ms after the last renewal (bound {bound} ms)"
    );
    let next = run_forever(&mut cluster, 1, "k");
    assert!(next > fence);
    settle(&mut cluster, &["k"]);
    format!("Lost seen {after} ms after the dead owner's last write (bound {bound} ms)")
}

/// D2 + D4: the owner is `SIGSTOP`ped past its lease; another replica runs the key; on
/// `SIGCONT` the old owner's run ends `Lost` at once and nothing it writes is accepted or seen.
pub fn sigstop_of_the_owner_past_its_lease() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 3);
    listen(&mut cluster, 2, &["k"]);
    let first = run_forever(&mut cluster, 0, "k");
    seen(&cluster, 2, "k", TTL, "items of the owner", |value| {
        value["progress"] == "5"
    });
    let paused = cluster.pause(0);
    let deadline = Instant::now() + TTL * 4;
    let second = loop {
        let answer = cluster.request(
            1,
            json!({"cmd": "run", "key": "k", "items": null, "every_ms": 10}),
        );
        if answer["ok"] == true {
            break answer["fence"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the key was never given away: {answer}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(second > first);
    seen(&cluster, 2, "k", TTL, "the new run's items", |value| {
        value["fence"] == json!(second) && value["progress"] == "3"
    });
    cluster.resume(0, paused);
    let resumed = now_us();
    let aborted = event(&cluster, "aborted", "k", first, TTL);
    assert_eq!(aborted.value["reason"], "lease lost");
    let late = aborted.value["at_us"]
        .as_u64()
        .unwrap()
        .saturating_sub(resumed)
        / 1000;
    assert!(
        late <= ROUND_TRIP_MS
            + cluster
                .stalls
                .within(resumed, aborted.value["at_us"].as_u64().unwrap())
                / 1000,
        "the zombie noticed {late} ms after SIGCONT"
    );
    let ended = event(&cluster, "ended", "k", first, TTL);
    assert_eq!(ended.value["outcome"], json!({"type": "lost"}));
    seen(
        &cluster,
        2,
        "k",
        TTL,
        "more items of the new run",
        |value| value["fence"] == json!(second) && value["progress"] == "30",
    );
    settle(&mut cluster, &["k"]);
    format!(
        "the zombie aborted {late} ms after SIGCONT; nothing of it was accepted after the takeover"
    )
}

/// A short `SIGSTOP` of the owner (well within its lease) loses nothing: every item is seen.
pub fn short_sigstop_loses_nothing() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 2);
    listen(&mut cluster, 1, &["k"]);
    let items = 120;
    let answer = cluster.request(
        0,
        json!({"cmd": "run", "key": "k", "items": items, "every_ms": 4}),
    );
    let fence = answer["fence"].as_u64().unwrap();
    seen(&cluster, 1, "k", TTL, "the 20th item", |value| {
        value["progress"] == "20"
    });
    let paused = cluster.pause(0);
    std::thread::sleep(TTL / 4);
    cluster.resume(0, paused);
    let ended = event(&cluster, "ended", "k", fence, TTL * 3);
    assert_eq!(ended.value["outcome"], json!({"type": "completed"}));
    seen(&cluster, 1, "k", TTL, "the end", |value| {
        value["state"] == "idle" && value["fence"] == json!(fence)
    });
    let progress: Vec<String> = cluster
        .events()
        .iter()
        .filter(|logged| {
            logged.replica == 1
                && logged.value["ev"] == "seen"
                && logged.value["fence"] == json!(fence)
        })
        .filter_map(|logged| logged.value["progress"].as_str().map(str::to_owned))
        .collect();
    let expected: Vec<String> = (0..items).map(|i| i.to_string()).collect();
    assert_eq!(progress, expected, "every item, in order, once");
    settle(&mut cluster, &["k"]);
    format!(
        "{items} items, all seen in order across a {} ms pause",
        (TTL / 4).as_millis()
    )
}

/// D6 with AOF (`appendfsync always`): Redis is killed and restarted; no acknowledged run is
/// forgotten, replicas reconnect and resubscribe by themselves, and the run goes on.
pub fn redis_restarted_on_its_aof() -> String {
    let mut cluster = Cluster::start(Persistence::AppendAlways, TTL, 2);
    listen(&mut cluster, 1, &["k", "done"]);
    let fence = run_forever(&mut cluster, 0, "k");
    let answer = cluster.request(
        0,
        json!({"cmd": "run", "key": "done", "items": 3, "every_ms": 1}),
    );
    event(
        &cluster,
        "ended",
        "done",
        answer["fence"].as_u64().unwrap(),
        TTL,
    );
    seen(&cluster, 1, "k", TTL, "items", |value| {
        value["progress"] == "5"
    });
    cluster.restart_redis();
    let restarted = now_us();
    let state = cluster.request(1, json!({"cmd": "state", "key": "k"}));
    assert_eq!(
        (state["state"].as_str(), state["fence"].as_u64()),
        (Some("running"), Some(fence)),
        "{state}"
    );
    let done = cluster.request(1, json!({"cmd": "state", "key": "done"}));
    assert_eq!(done["outcome"], json!({"type": "completed"}), "{done}");
    seen(
        &cluster,
        1,
        "k",
        TTL * 3,
        "items after the restart",
        |value| {
            value["at_us"].as_u64().unwrap_or(0) > restarted
                && value["fence"] == json!(fence)
                && value["progress"].is_string()
        },
    );
    let stop = cluster.request(1, json!({"cmd": "stop", "key": "k"}));
    assert_eq!(stop["ok"], true, "{stop}");
    let ended = event(&cluster, "ended", "k", fence, TTL);
    assert_eq!(
        ended.value["outcome"],
        json!({"type": "stopped", "reason": "stop"})
    );
    settle(&mut cluster, &["k", "done"]);
    "the run survived the restart; listeners resubscribed".to_owned()
}

/// D6 without persistence: Redis restarts empty; the owner ends its run `Lost` within TTL/3
/// (+ one round trip), states read afterwards are idle with no outcome, and fences stay above
/// every old fence.
pub fn redis_restarted_empty() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 2);
    listen(&mut cluster, 1, &["k"]);
    let fence = run_forever(&mut cluster, 0, "k");
    seen(&cluster, 1, "k", TTL, "items", |value| {
        value["progress"] == "5"
    });
    cluster.restart_redis_empty();
    let restarted = now_us();
    let ended = event(&cluster, "ended", "k", fence, TTL * 2);
    assert_eq!(ended.value["outcome"], json!({"type": "lost"}));
    let noticed = ended.value["at_us"]
        .as_u64()
        .unwrap()
        .saturating_sub(restarted)
        / 1000;
    assert!(
        noticed
            <= 1000 / 3
                + ROUND_TRIP_MS
                + cluster
                    .stalls
                    .within(restarted, ended.value["at_us"].as_u64().unwrap())
                    / 1000,
        "the owner noticed the data loss after {noticed} ms"
    );
    let state = cluster.request(1, json!({"cmd": "state", "key": "k"}));
    assert_eq!(
        (
            state["state"].as_str(),
            state["outcome"].clone(),
            state["seq"].as_u64()
        ),
        (Some("idle"), Value::Null, Some(0)),
        "{state}"
    );
    seen(
        &cluster,
        1,
        "k",
        TTL * 2,
        "the key idle after the loss",
        |value| {
            value["at_us"].as_u64().unwrap_or(0) > restarted
                && value["state"] == "idle"
                && value["fence"].is_null()
        },
    );
    let next = run_forever(&mut cluster, 1, "k");
    assert!(next > fence, "fence {next} after the loss, {fence} before");
    settle(&mut cluster, &["k"]);
    format!("the owner ended its run Lost {noticed} ms after the restart")
}

/// D4 + D8: Redis is `SIGSTOP`ped for 2 × TTL. Calls give typed timeouts (nothing hangs), a run
/// asked for meanwhile is not started, the owner demotes itself before its Redis deadline, and
/// no lease is revived when Redis resumes.
pub fn redis_sigstopped_for_two_ttls() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 2);
    listen(&mut cluster, 1, &["k"]);
    let fence = run_forever(&mut cluster, 0, "k");
    seen(&cluster, 1, "k", TTL, "items", |value| {
        value["progress"] == "5"
    });
    let paused = cluster.pause_redis();
    let state = cluster.request(1, json!({"cmd": "state", "key": "k"}));
    assert_eq!(
        (state["ok"].clone(), state["error"].clone()),
        (json!(false), json!("timeout")),
        "{state}"
    );
    let took = state["took_us"].as_u64().unwrap() / 1000;
    let budget = u64::try_from(CALL_TIMEOUT.as_millis()).unwrap() + ROUND_TRIP_MS;
    assert!(
        took <= budget,
        "a call took {took} ms while Redis was paused"
    );
    let run = cluster.request(
        1,
        json!({"cmd": "run", "key": "other", "items": null, "every_ms": 10}),
    );
    assert_eq!(
        (run["ok"].clone(), run["error"].clone()),
        (json!(false), json!("timeout")),
        "{run}"
    );
    let aborted = event(&cluster, "aborted", "k", fence, TTL * 2);
    assert_eq!(aborted.value["reason"], "lease lost");
    let ended = event(&cluster, "ended", "k", fence, TTL);
    assert_eq!(ended.value["outcome"], json!({"type": "lost"}));
    let elapsed = Duration::from_micros(now_us().saturating_sub(paused));
    std::thread::sleep((TTL * 2).saturating_sub(elapsed));
    cluster.resume_redis(paused);
    seen(&cluster, 1, "k", TTL * 2, "the key reaped, Lost", |value| {
        value["state"] == "idle" && value["outcome"] == json!({"type": "lost"})
    });
    let next = run_forever(&mut cluster, 1, "k");
    assert!(next > fence);
    settle(&mut cluster, &["k", "other"]);
    format!("calls timed out after {took} ms; the owner demoted itself; nothing revived")
}

/// D2 + D4 + D5: the owner is partitioned from Redis (nothing it sends gets through, nothing
/// comes back) while the other replicas go on. Its process runs on: it demotes itself before
/// Redis could give the key away (signal `lease lost`, handle `Lost`); another replica reaps the
/// key and runs it with a larger fence; a run asked of the partitioned replica times out. When
/// the partition heals, what the old owner sent meanwhile reaches Redis late and is refused (the
/// checker: no stale write accepted), and its listener catches up with the new run.
pub fn partition_of_the_owner_from_redis() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 0);
    let owner = cluster.spawn_proxied_replica();
    let (other, watcher) = (cluster.spawn_replica(), cluster.spawn_replica());
    listen(&mut cluster, owner, &["k"]);
    listen(&mut cluster, watcher, &["k"]);
    let first = run_forever(&mut cluster, owner, "k");
    seen(&cluster, watcher, "k", TTL, "items of the owner", |value| {
        value["progress"] == "5"
    });
    let cut = cluster.partition(owner);
    let aborted = event(&cluster, "aborted", "k", first, TTL * 2);
    assert_eq!(aborted.value["reason"], "lease lost");
    let demoted_at = aborted.value["at_us"].as_u64().unwrap();
    let ended = event(&cluster, "ended", "k", first, TTL);
    assert_eq!(ended.value["outcome"], json!({"type": "lost"}));
    seen(
        &cluster,
        watcher,
        "k",
        TTL * 3,
        "the key reaped by another replica",
        |value| {
            value["state"] == "idle"
                && value["fence"] == json!(first)
                && value["outcome"] == json!({"type": "lost"})
        },
    );
    // Redis's deadline when the owner gave up: the one its last accepted write set.
    let deadline = checker::parse(&cluster.audit_lines())
        .iter()
        .filter(|entry| entry.f == first && entry.t <= demoted_at)
        .filter_map(|entry| entry.d)
        .max()
        .unwrap();
    let margin = i128::from(deadline) - i128::from(demoted_at / 1000);
    let second = run_forever(&mut cluster, other, "k");
    assert!(second > first);
    let answer = cluster.request(
        owner,
        json!({"cmd": "run", "key": "asked", "items": 3, "every_ms": 1}),
    );
    assert_eq!(
        (answer["ok"].clone(), answer["error"].clone()),
        (json!(false), json!("timeout")),
        "{answer}"
    );
    let partitioned = Duration::from_micros(now_us().saturating_sub(cut));
    cluster.heal(owner);
    let healed = now_us();
    seen(
        &cluster,
        owner,
        "k",
        TTL * 3,
        "the new run's items on the healed replica",
        |value| {
            value["at_us"].as_u64().unwrap_or(0) > healed
                && value["fence"] == json!(second)
                && value["progress"].is_string()
        },
    );
    let again = run_forever(&mut cluster, owner, "after");
    settle(&mut cluster, &["k", "asked", "after"]);
    format!(
        "partitioned {} ms: the owner demoted itself {margin} ms before its Redis deadline; \
         run {second} elsewhere, run {again} on the healed replica",
        partitioned.as_millis()
    )
}

/// D4 + D5: every connection of the owner to Redis is reset, again and again, for 2 × TTL
/// (a flapping network, or `CLIENT KILL` of that replica alone); the other replicas go on. The
/// owner's run goes on or ends `Lost`, demoting itself in time; nothing stale is accepted; once
/// the resets stop, its listener catches up and a stop reaches it at once.
pub fn connections_of_the_owner_reset_repeatedly() -> String {
    let mut cluster = Cluster::start(Persistence::None, TTL, 0);
    let owner = cluster.spawn_proxied_replica();
    let watcher = cluster.spawn_replica();
    listen(&mut cluster, owner, &["k", "w"]);
    listen(&mut cluster, watcher, &["k"]);
    let fence = run_forever(&mut cluster, owner, "k");
    seen(&cluster, watcher, "k", TTL, "items of the owner", |value| {
        value["progress"] == "5"
    });
    let until = Instant::now() + TTL * 2;
    let mut resets = 0;
    while Instant::now() < until {
        cluster.reset_connections(owner);
        resets += 1;
        // How often the network flaps: a fault's timing, not an ordering.
        std::thread::sleep(Duration::from_millis(25));
    }
    let stopped = now_us();
    let run = cluster.request(
        watcher,
        json!({"cmd": "run", "key": "w", "items": null, "every_ms": 10}),
    );
    let survived = cluster
        .events()
        .iter()
        .all(|logged| logged.value["ev"] != "ended" || logged.value["fence"] != json!(fence));
    seen(
        &cluster,
        owner,
        "w",
        TTL * 3,
        "another replica's run, on the owner's listener",
        |value| value["at_us"].as_u64().unwrap_or(0) > stopped && value["progress"].is_string(),
    );
    if survived {
        let stop = cluster.request(watcher, json!({"cmd": "stop", "key": "k"}));
        assert_eq!(stop["ok"], true, "{stop}");
        let aborted = event(&cluster, "aborted", "k", fence, TTL);
        let latency = aborted.value["at_us"].as_u64().unwrap() - stop["sent_us"].as_u64().unwrap();
        assert!(
            latency <= ROUND_TRIP_MS * 1000,
            "abort {latency} µs after the stop"
        );
    }
    assert_eq!(run["ok"], true, "{run}");
    settle(&mut cluster, &["k", "w"]);
    format!(
        "{resets} resets in {} ms; the owner's run {}",
        (TTL * 2).as_millis(),
        if survived {
            "went on"
        } else {
            "ended Lost, in time"
        }
    )
}

/// A small xorshift generator: the nemesis replays exactly from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The seeded random nemesis: runs, stops and every fault above at random, on five keys and
/// three replicas (at least one always live, not paused nor partitioned), each reaching Redis
/// through a proxy of its own, Redis on AOF; then settle and check.
pub fn nemesis(seed: u64, duration: Duration) -> String {
    let keys = ["n0", "n1", "n2", "n3", "n4"];
    let mut rng = Rng::new(seed);
    let mut cluster = Cluster::start(Persistence::AppendAlways, TTL, 0);
    for _ in 0..3 {
        let replica = cluster.spawn_proxied_replica();
        listen(&mut cluster, replica, &keys);
    }
    let started = Instant::now();
    let mut resume_at: Vec<(Instant, usize, u64)> = Vec::new();
    let mut heal_at: Vec<(Instant, usize)> = Vec::new();
    let mut faults = std::collections::BTreeMap::<&str, u32>::new();
    while started.elapsed() < duration {
        let now = Instant::now();
        for (_, replica, paused) in resume_at.iter().filter(|(at, ..)| *at <= now) {
            cluster.resume(*replica, *paused);
        }
        resume_at.retain(|(at, ..)| *at > now);
        for &(_, replica) in heal_at.iter().filter(|(at, _)| *at <= now) {
            cluster.heal(replica);
        }
        heal_at.retain(|(at, _)| *at > now);
        let live = cluster.live();
        let roll = rng.below(100);
        let key = *rng.pick(&keys);
        let op = match roll {
            0..=44 => {
                let replica = *rng.pick(&live);
                let items = match rng.below(3) {
                    0 => Value::Null,
                    _ => json!(1 + rng.below(60)),
                };
                let deltas = rng.below(2) == 0;
                cluster.send(
                    replica,
                    json!({"cmd": "run", "key": key, "items": items, "every_ms": 1 + rng.below(15), "deltas": deltas}),
                );
                "run"
            }
            45..=69 => {
                let replica = *rng.pick(&live);
                cluster.send(replica, json!({"cmd": "stop", "key": key}));
                "stop"
            }
            70..=75 if live.len() >= 2 => {
                cluster.kill(*rng.pick(&live));
                "kill -9 a replica"
            }
            76..=81 if live.len() >= 2 => {
                let replica = *rng.pick(&live);
                let long = rng.below(3) == 0;
                let pause = if long {
                    TTL * 3 / 2
                } else {
                    Duration::from_millis(20 + rng.below(150))
                };
                let paused = cluster.pause(replica);
                resume_at.push((Instant::now() + pause, replica, paused));
                if long {
                    "SIGSTOP a replica past its lease"
                } else {
                    "short SIGSTOP of a replica"
                }
            }
            82..=85 => {
                // Zero when every subscription is still reconnecting from the last cut.
                let _ = cluster.kill_subscribers();
                "CLIENT KILL the subscribers"
            }
            86..=87 => {
                cluster.restart_redis();
                "Redis killed, restarted on its AOF"
            }
            88 => {
                let paused = cluster.pause_redis();
                std::thread::sleep(TTL * 2);
                cluster.resume_redis(paused);
                "Redis SIGSTOPped for 2 × TTL"
            }
            89..=92 if live.len() >= 2 => {
                let replica = *rng.pick(&live);
                let long = rng.below(3) == 0;
                let partition = if long {
                    TTL * 3 / 2
                } else {
                    Duration::from_millis(20 + rng.below(180))
                };
                cluster.partition(replica);
                heal_at.push((Instant::now() + partition, replica));
                if long {
                    "partition a replica from Redis past its lease"
                } else {
                    "short partition of a replica from Redis"
                }
            }
            93..=94 => {
                let alive: Vec<usize> = (0..cluster.replicas.len())
                    .filter(|&r| cluster.replicas[r].alive)
                    .collect();
                cluster.reset_connections(*rng.pick(&alive));
                "reset a replica's connections"
            }
            _ => {
                let dead = (0..cluster.replicas.len())
                    .filter(|&r| !cluster.replicas[r].alive)
                    .count();
                if dead > 0 && cluster.replicas.len() < 12 {
                    let replica = cluster.spawn_proxied_replica();
                    listen(&mut cluster, replica, &keys);
                    "a new replica"
                } else {
                    "nothing"
                }
            }
        };
        *faults.entry(op).or_default() += 1;
        if op != "run" && op != "stop" && op != "nothing" {
            cluster.actions.push((now_us(), op.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
    }
    for (_, replica, paused) in std::mem::take(&mut resume_at) {
        cluster.resume(replica, paused);
    }
    for (_, replica) in std::mem::take(&mut heal_at) {
        cluster.heal(replica);
    }
    // Let the commands in flight answer (a run asked for just now may still start), then settle.
    std::thread::sleep(CALL_TIMEOUT * 2);
    let report = settle(&mut cluster, &keys);
    let faults: Vec<String> = faults
        .iter()
        .map(|(op, count)| format!("{op} ×{count}"))
        .collect();
    format!(
        "{} runs, {} owner writes (0 stale), {} reaps (max {} ms after a deadline), {} transitions seen; {}",
        report.runs,
        report.writes,
        report.reaps,
        report.max_reap_delay_ms,
        report.seen,
        faults.join(", ")
    )
}
