//! The replica process: one `ClusterRepository` on tokio, driven by JSON lines on stdin and
//! reporting JSON lines on stdout, so the suite can `kill -9` and `SIGSTOP` it for real.
//!
//! Commands (`id` is echoed in the answer):
//! - `{"cmd":"run","id":1,"key":"k","items":10,"every_ms":5}`: a task yielding `items` items
//!   (`"0"`, `"1"`, …) every `every_ms` ms, then completing; `items: null` yields forever.
//!   Answer `{"ev":"run","id":1,"ok":true,"fence":F}` or `{"ev":"run","id":1,"ok":false,
//!   "error":"busy","running":F}` (`"timeout"`, `"unavailable"`, `"shut down"`, …).
//! - `{"cmd":"stop","id":2,"key":"k"}`: `stop(&key)`. Answer `{"ev":"stop","id":2,"ok":true,
//!   "fence":F,"sent_us":T0,"done_us":T1}` or `"ok":false` with `"error"`.
//! - `{"cmd":"node","id":3,"key":"k"}`: takes `state_node(k)` and keeps it under `id`; answer
//!   with its kind and fence. `{"cmd":"node_stop","id":4,"node":3}`: stops with that node.
//! - `{"cmd":"state","id":5,"key":"k"}`: answer `{"ev":"state","id":5,"ok":true,"state":…,
//!   "fence":F,"seq":S,"took_us":D}` (or `"ok":false` with `"error"`).
//! - `{"cmd":"listen","id":6,"key":"k"}`: from now on every transition of `k` is reported as
//!   `{"ev":"seen","key":"k","fence":F,"seq":S,"state":"running"|"idle","progress":…,
//!   "outcome":…}`, errors as `{"ev":"seen_error","key":"k","error":"…"}`.
//!
//! Reports: `{"ev":"ready","replica":ID}` once connected; `{"ev":"aborted","key","fence",
//! "reason","at_us"}` when a run's abort signal fires; `{"ev":"ended","key","fence","outcome",
//! "at_us"}` when a run handle resolves. Times are wall-clock microseconds, the clock Redis's
//! `TIME` reads on this machine.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use keyrunner_redis::{
    ClusterRepository, Delta, ErrorKind, Event, Outcome, RunError, State, StateNode, StopError,
    TaskContext,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

type Repo = ClusterRepository<String, String, String>;
type Node = StateNode<String, String, String>;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

fn emit(value: Value) {
    // One line per event; `println!` locks stdout, so lines never interleave.
    println!("{value}");
}

pub fn main() -> ExitCode {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let url = var("KEYRUNNER_REDIS_URL");
    let namespace = var("KEYRUNNER_REDIS_NAMESPACE");
    let ttl = Duration::from_millis(var("KEYRUNNER_REDIS_TTL_MS").parse().expect("a TTL in ms"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let repository: Repo = match ClusterRepository::builder(url.as_str())
            .namespace(namespace)
            .lease_ttl(ttl)
            .connect()
            .await
        {
            Ok(repository) => repository,
            Err(error) => {
                emit(json!({"ev": "failed", "error": error.to_string()}));
                return ExitCode::FAILURE;
            }
        };
        emit(json!({"ev": "ready", "replica": repository.replica_id()}));
        let nodes: Arc<Mutex<HashMap<u64, Node>>> = Arc::default();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(command) = serde_json::from_str::<Value>(&line) else {
                emit(json!({"ev": "bad_command", "line": line}));
                continue;
            };
            let repository = repository.clone();
            let nodes = Arc::clone(&nodes);
            tokio::spawn(async move { execute(repository, nodes, command).await });
        }
        ExitCode::SUCCESS
    })
}

async fn execute(repository: Repo, nodes: Arc<Mutex<HashMap<u64, Node>>>, command: Value) {
    let id = command["id"].as_u64().unwrap_or(0);
    let key = command["key"].as_str().unwrap_or_default().to_owned();
    match command["cmd"].as_str().unwrap_or_default() {
        "run" => {
            let items = command["items"].as_u64();
            let every = Duration::from_millis(command["every_ms"].as_u64().unwrap_or(10));
            // Snapshots ("0", "1", …) or, with `"deltas": true`, deltas of the same text.
            if command["deltas"] == true {
                let task = move |cx: TaskContext<String>| {
                    report_abort(&cx);
                    numbers(items, every).map(|item| item.map(Delta))
                };
                run_and_report(repository, key, id, task).await;
            } else {
                let task = move |cx: TaskContext<String>| {
                    report_abort(&cx);
                    numbers(items, every)
                };
                run_and_report(repository, key, id, task).await;
            }
        }
        "stop" => {
            let sent = now_us();
            let result = repository
                .stop(&key, keyrunner_redis::Reason::from("stop"))
                .await;
            let done = now_us();
            match result {
                Ok(run) => emit(json!({
                    "ev": "stop", "id": id, "ok": true, "fence": run.get(),
                    "sent_us": sent, "done_us": done,
                })),
                Err(error) => emit(json!({
                    "ev": "stop", "id": id, "ok": false, "error": stop_error(&error),
                    "sent_us": sent, "done_us": done,
                })),
            }
        }
        "node" => match repository.state_node(key).await {
            Ok(node) => {
                let (kind, fence) = match &node {
                    StateNode::Idle(_) => ("idle", None),
                    StateNode::Running(running) => ("running", Some(running.run_id().get())),
                };
                nodes.lock().unwrap().insert(id, node);
                emit(json!({"ev": "node", "id": id, "ok": true, "kind": kind, "fence": fence}));
            }
            Err(error) => {
                emit(json!({"ev": "node", "id": id, "ok": false, "error": error.to_string()}))
            }
        },
        "node_stop" => {
            let node = nodes
                .lock()
                .unwrap()
                .remove(&command["node"].as_u64().unwrap_or(0));
            let answer = match node {
                Some(StateNode::Running(running)) => {
                    match running.stop(keyrunner_redis::Reason::from("node")).await {
                        Ok(()) => json!({"ev": "node_stop", "id": id, "ok": true}),
                        Err(error) => {
                            json!({"ev": "node_stop", "id": id, "ok": false, "error": stop_error(&error)})
                        }
                    }
                }
                _ => json!({"ev": "node_stop", "id": id, "ok": false, "error": "no running node"}),
            };
            emit(answer);
        }
        "state" => {
            let started = Instant::now();
            let result = repository.event(&key).await;
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            match result {
                Ok(event) => {
                    let mut answer = event_json(&event);
                    answer["ev"] = json!("state");
                    answer["id"] = json!(id);
                    answer["ok"] = json!(true);
                    answer["took_us"] = json!(took);
                    emit(answer);
                }
                Err(error) => emit(json!({
                    "ev": "state", "id": id, "ok": false, "error": error_kind(error.kind()),
                    "took_us": took,
                })),
            }
        }
        "listen" => {
            let listened = key.clone();
            let result = repository
                .listen(
                    key,
                    move |item| match item {
                        Ok(event) => {
                            let mut seen = event_json(event);
                            seen["ev"] = json!("seen");
                            seen["key"] = json!(listened);
                            seen["at_us"] = json!(now_us());
                            emit(seen);
                        }
                        Err(error) => emit(json!({
                            "ev": "seen_error", "key": listened, "error": error.to_string(),
                        })),
                    },
                    true,
                )
                .await;
            match result {
                Ok(subscription) => {
                    emit(json!({"ev": "listen", "id": id, "ok": true}));
                    // Listen for the rest of the process's life.
                    std::mem::forget(subscription);
                }
                Err(error) => {
                    emit(json!({"ev": "listen", "id": id, "ok": false, "error": error.to_string()}))
                }
            }
        }
        "stream" => {
            // A stream consumer, for the same purpose as `listen`, exercising `StateStream`.
            let mut stream = repository.stream(key.clone());
            emit(json!({"ev": "stream", "id": id, "ok": true}));
            while let Some(item) = stream.next().await {
                if let Ok(transition) = item {
                    emit(json!({"ev": "streamed", "key": key, "seq": transition.position().seq()}));
                }
            }
        }
        other => emit(json!({"ev": "bad_command", "cmd": other})),
    }
}

/// An event as JSON: `state` (`running`/`idle`) with `progress` or `outcome`, or `delta`; `fence`
/// (the position's run, `null` for a key with no history) and `seq` (within the run).
fn event_json(event: &Event<String, String>) -> Value {
    let position = event.position();
    let mut value = match event {
        Event::State { state, .. } => state_json(state),
        Event::Delta { delta, .. } => json!({"state": "running", "delta": **delta}),
    };
    value["fence"] = json!(position.run_id().map(|run| run.get()));
    value["seq"] = json!(position.seq());
    value
}

/// Reports the run's abort signal when it fires.
fn report_abort(cx: &TaskContext<String>) {
    let fence = cx.run_id().get();
    let key = cx.key().clone();
    cx.abort_signal()
        .on_abort(move |reason| {
            emit(json!({
                "ev": "aborted", "key": key, "fence": fence,
                "reason": reason.map(|reason| reason.as_str().to_owned()),
                "at_us": now_us(),
            }));
        })
        .detach();
}

/// `items` numbers ("0", "1", …; forever for `None`), one every `every`.
fn numbers(
    items: Option<u64>,
    every: Duration,
) -> impl futures::Stream<Item = Result<String, String>> + Send {
    futures::stream::unfold(0_u64, move |i| async move {
        if items.is_some_and(|items| i >= items) {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok(i.to_string()), i + 1))
    })
}

/// Runs `task` on `key` and reports the answer, then the run's end.
async fn run_and_report<F, St, M>(repository: Repo, key: String, id: u64, task: F)
where
    F: FnOnce(TaskContext<String>) -> St + Send + 'static,
    St: futures::Stream + Send + 'static,
    St::Item: keyrunner_redis::IntoProgress<String, String, M>,
    M: 'static,
{
    match repository.run(key.clone(), task).await {
        Ok(handle) => {
            let fence = handle.run_id().get();
            emit(json!({"ev": "run", "id": id, "ok": true, "fence": fence}));
            let outcome = handle.await;
            emit(json!({
                "ev": "ended", "key": key, "fence": fence,
                "outcome": outcome_json(&outcome), "at_us": now_us(),
            }));
        }
        Err(error) => {
            let running = match &error {
                RunError::Busy { running, .. } => Some(running.get()),
                _ => None,
            };
            emit(json!({
                "ev": "run", "id": id, "ok": false, "error": run_error(&error),
                "running": running,
            }));
        }
    }
}

fn state_json(state: &State<String, String>) -> Value {
    match state {
        State::Running { progress, .. } => json!({"state": "running", "progress": progress}),
        State::Idle { last, .. } => json!({
            "state": "idle",
            "outcome": last.as_ref().map(outcome_json),
        }),
    }
}

pub fn outcome_json(outcome: &Outcome<String>) -> Value {
    serde_json::to_value(outcome).unwrap_or(Value::Null)
}

fn error_kind(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Timeout => "timeout",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::ShutDown => "shut down",
        _ => "other",
    }
}

fn run_error<F>(error: &RunError<F>) -> &'static str {
    match error {
        RunError::Busy { .. } => "busy",
        RunError::ShutDown { .. } => "shut down",
        RunError::Failed { error, .. } => error_kind(error.kind()),
        RunError::Spawn { .. } => "spawn",
    }
}

fn stop_error(error: &StopError) -> &'static str {
    match error {
        StopError::Idle => "idle",
        StopError::Ended { .. } => "ended",
        StopError::Unavailable(error) => error_kind(error.kind()),
        _ => "other",
    }
}
