//! The `web` example over HTTP: every route and status, the order of its Server-Sent Events,
//! 1,000 concurrent runs, a client leaving mid-stream, and a graceful shutdown with 100 open
//! event streams.
//!
//! Each test starts the example's server on an ephemeral port (see `web_support`) and talks to
//! it with a plain HTTP/1 client. Every wait has a deadline; nothing sleeps to order events.

#[path = "../examples/web/agent.rs"]
mod agent;
#[path = "../examples/web/app.rs"]
mod app;
#[path = "../examples/web/closing.rs"]
mod closing;
mod web_support;
#[path = "../examples/web/wire.rs"]
mod wire;

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyrunner::AbortController;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::agent::RunRequest;
use crate::app::{DEFAULT_STOP_REASON, SHUTDOWN_GRACE, SHUTDOWN_REASON};
use crate::web_support::Server;

/// The longest any single wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// `future`, or a panic naming `what` if it takes longer than [`DEADLINE`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?}: {what}"))
}

// ---------------------------------------------------------------------------------------------
// A small HTTP client
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("a valid request");
        within(url, self.client.request(request)).await
    }

    /// The status and JSON body of a request.
    async fn json(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .send(method, url, content_type, body)
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        let status = response.status();
        let bytes = within(url, response.into_body().collect())
            .await
            .expect("a complete body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!(
                "{url}: not JSON ({error}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, body)
    }

    async fn get(&self, url: &str) -> (StatusCode, Value) {
        self.json(Method::GET, url, None, "").await
    }

    async fn post(&self, url: &str, body: Value) -> (StatusCode, Value) {
        self.json(
            Method::POST,
            url,
            Some("application/json"),
            &body.to_string(),
        )
        .await
    }

    /// Opens an event stream; the response must be `text/event-stream`.
    async fn events(&self, url: &str) -> Events {
        let response = self
            .send(Method::GET, url, None, "")
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream",
            "{url}"
        );
        Events {
            body: response.into_body(),
            buffer: String::new(),
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// The events of one `text/event-stream` response, parsed as they arrive.
struct Events {
    body: Incoming,
    buffer: String,
}

impl Events {
    /// The next event, or `None` once the server ended the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        within("the next server-sent event", self.next_event()).await
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&block) {
                    return Some(event);
                }
            }
            let frame = self.body.frame().await?.expect("the stream does not fail");
            if let Ok(data) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&data).expect("UTF-8 events"));
            }
        }
    }

    /// The next event's state, checking that it is a `state` event with an id.
    async fn next_state(&mut self) -> Option<Value> {
        let event = self.next().await?;
        assert_eq!(event.event.as_deref(), Some("state"), "{event:?}");
        assert!(event.id.is_some(), "every event carries an id: {event:?}");
        Some(event.data)
    }
}

/// One event block, or `None` for a comment-only block (a keep-alive).
fn parse_event(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data.join("\n")).expect("JSON event data");
    Some(SseEvent { id, event, data })
}

/// A run request as JSON.
fn run_body(tokens: u32, interval_ms: u64) -> Value {
    json!({ "prompt": "hello", "tokens": tokens, "interval_ms": interval_ms })
}

/// The full reply the fake agent gives to `prompt` in `tokens` tokens.
async fn full_reply(prompt: &str, tokens: u32) -> String {
    let request = RunRequest {
        prompt: prompt.to_owned(),
        tokens: Some(tokens),
        interval_ms: Some(0),
    };
    let agent = request.validate().expect("valid bounds");
    agent
        .tokens(AbortController::new().signal())
        .collect::<String>()
        .await
}

/// Polls `GET /stats` until `done` holds, or fails after [`DEADLINE`] with the last stats.
async fn wait_for_stats(http: &Http, server: &Server, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, stats) = http.get(&server.url("/stats")).await;
        assert_eq!(status, StatusCode::OK);
        if done(&stats) {
            return stats;
        }
        assert!(started.elapsed() < DEADLINE, "stats never settled: {stats}");
        // A watchdog poll, not an ordering: the condition is checked again until the deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn idle_with(last: Value) -> Value {
    json!({ "type": "idle", "last": last, "progress": null })
}

// ---------------------------------------------------------------------------------------------
// Routes and statuses
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_one_self_contained_html_file() {
    let server = Server::start().await;
    let response = Http::new()
        .send(Method::GET, &server.url("/"), None, "")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.contains("<title>keyrunner · live agents</title>"));
    // No CDN, no build step: nothing is loaded from anywhere else.
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_answers_202_409_200_and_replaces_on_request() {
    let server = Server::start().await;
    let http = Http::new();
    let run = server.url("/agents/chat-1/run");

    let (status, first) = http.post(&run, run_body(1000, 50)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first_run = first["run"].as_u64().expect("a run id");

    // `reject` is the default, and names the run holding the key.
    for url in [run.clone(), format!("{run}?conflict=reject")] {
        let (status, body) = http.post(&url, run_body(1, 0)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "busy");
        assert_eq!(body["running"], first_run);
        assert_eq!(
            body["message"],
            format!("the agent is already running run#{first_run}")
        );
    }

    let (status, body) = http
        .post(&format!("{run}?conflict=use-existing"), run_body(1, 0))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "run": first_run }));

    let mut events = http.events(&server.url("/agents/chat-1/events")).await;
    let (status, body) = http
        .post(&format!("{run}?conflict=replace"), run_body(1000, 50))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second_run = body["run"].as_u64().unwrap();
    assert!(second_run > first_run);
    // The replaced run ended as stopped, "superseded", before the new one started.
    let mut seen = Vec::new();
    while let Some(state) = events.next_state().await {
        let done = state["type"] == "running" && state["run"] == second_run;
        seen.push(state);
        if done {
            break;
        }
    }
    let stopped = idle_with(json!({ "type": "stopped", "reason": "superseded" }));
    assert!(seen.contains(&stopped), "{seen:?}");

    // `use-existing` on an idle key starts a run: 202.
    let (status, body) = http
        .post(
            &server.url("/agents/chat-2/run?conflict=use-existing"),
            run_body(1, 0),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_bodies_and_queries_are_400_with_a_json_error() {
    let server = Server::start().await;
    let http = Http::new();
    let long_key = "k".repeat(65);
    for key in [
        "bad%20key",
        "caf%C3%A9",
        "a.b",
        "semi%3Bcolon",
        long_key.as_str(),
    ] {
        for (method, path) in [
            (Method::POST, "run"),
            (Method::POST, "stop"),
            (Method::GET, "events"),
        ] {
            let url = server.url(&format!("/agents/{key}/{path}"));
            let (status, body) = http
                .json(
                    method,
                    &url,
                    Some("application/json"),
                    &run_body(1, 0).to_string(),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
            assert_eq!(body["error"], "invalid_key", "{url}");
        }
        let (status, body) = http.get(&server.url(&format!("/agents/{key}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    // The longest valid key, every allowed character.
    let (status, body) = http
        .post(
            &server.url(&format!("/agents/{}/run", "aZ0_-".repeat(12) + "abcd")),
            run_body(1, 0),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let run = server.url("/agents/chat/run");
    for (content_type, body) in [
        (Some("application/json"), "{}".to_owned()),
        (Some("application/json"), "not json".to_owned()),
        (Some("application/json"), r#"{"prompt": 7}"#.to_owned()),
        (
            Some("application/json"),
            r#"{"prompt": "hi", "colour": 1}"#.to_owned(),
        ),
        (Some("application/json"), run_body(0, 0).to_string()),
        (Some("application/json"), run_body(1, 3_600_000).to_string()),
        (Some("text/plain"), run_body(1, 0).to_string()),
        (None, run_body(1, 0).to_string()),
    ] {
        let (status, error) = http.json(Method::POST, &run, content_type, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"], "bad_request", "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, error) = http
        .post(&format!("{run}?conflict=sometimes"), run_body(1, 0))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"], "bad_request");

    let (status, error) = http
        .json(
            Method::POST,
            &server.url("/agents/chat/stop"),
            Some("application/json"),
            r#"{"reason": 1}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    // Nothing was started by the bad requests.
    assert!(
        server
            .agents()
            .state(&app::AgentKey::parse("chat").unwrap())
            .is_idle()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_200_with_the_reason_and_404_when_idle() {
    let server = Server::start().await;
    let http = Http::new();
    let stop = server.url("/agents/chat/stop");
    let state = server.url("/agents/chat");

    let (status, body) = http.json(Method::POST, &stop, None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_running");

    // Watching the key keeps its last outcome remembered after the run.
    let mut events = http.events(&server.url("/agents/chat/events")).await;
    assert_eq!(events.next_state().await, Some(idle_with(Value::Null)));

    // Without a body: the documented default reason.
    let (_, started) = http
        .post(&server.url("/agents/chat/run"), run_body(1000, 50))
        .await;
    let (status, body) = http.json(Method::POST, &stop, None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "run": started["run"], "reason": DEFAULT_STOP_REASON })
    );
    let stopped = idle_with(json!({ "type": "stopped", "reason": DEFAULT_STOP_REASON }));
    assert_eq!(http.get(&state).await, (StatusCode::OK, stopped));

    // With a reason.
    let (_, started) = http
        .post(&server.url("/agents/chat/run"), run_body(1000, 50))
        .await;
    let (status, body) = http.post(&stop, json!({ "reason": "user left" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "run": started["run"], "reason": "user left" })
    );
    let stopped = idle_with(json!({ "type": "stopped", "reason": "user left" }));
    assert_eq!(http.get(&state).await, (StatusCode::OK, stopped));

    // An empty JSON object also takes the default.
    http.post(&server.url("/agents/chat/run"), run_body(1000, 50))
        .await;
    let (status, body) = http.post(&stop, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reason"], DEFAULT_STOP_REASON);

    let (status, _) = http.json(Method::POST, &stop, None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_running_keys_and_stats_follow_the_runs() {
    let server = Server::start().await;
    let http = Http::new();
    assert_eq!(
        http.get(&server.url("/agents/a")).await,
        (StatusCode::OK, idle_with(Value::Null))
    );
    assert_eq!(
        http.get(&server.url("/agents")).await,
        (StatusCode::OK, json!([]))
    );
    let zero = json!({ "remembered": 0, "running": 0, "live_tasks": 0 });
    assert_eq!(
        http.get(&server.url("/stats")).await,
        (StatusCode::OK, zero.clone())
    );

    for key in ["b", "a"] {
        let (status, _) = http
            .post(
                &server.url(&format!("/agents/{key}/run")),
                run_body(1000, 50),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    assert_eq!(
        http.get(&server.url("/agents")).await,
        (StatusCode::OK, json!(["a", "b"]))
    );
    let (_, state) = http.get(&server.url("/agents/a")).await;
    assert_eq!(state["type"], "running");
    assert!(state["run"].is_u64());
    assert_eq!(
        http.get(&server.url("/stats")).await,
        (
            StatusCode::OK,
            json!({ "remembered": 2, "running": 2, "live_tasks": 2 })
        )
    );

    for key in ["a", "b"] {
        http.json(
            Method::POST,
            &server.url(&format!("/agents/{key}/stop")),
            None,
            "",
        )
        .await;
    }
    // Nobody watches the keys: once the streams are dropped, both are forgotten.
    wait_for_stats(&http, &server, |stats| *stats == zero).await;
    assert_eq!(
        http.get(&server.url("/agents")).await,
        (StatusCode::OK, json!([]))
    );
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_the_current_state_then_every_transition_in_order() {
    let server = Server::start().await;
    let http = Http::new();
    let mut events = http.events(&server.url("/agents/story/events")).await;

    let first = events.next().await.expect("the current state");
    assert_eq!(first.event.as_deref(), Some("state"));
    assert_eq!(first.id.as_deref(), Some("0"));
    assert_eq!(first.data, idle_with(Value::Null));

    let (_, started) = http
        .post(&server.url("/agents/story/run"), run_body(8, 10))
        .await;
    let run = started["run"].clone();

    // Running with no token yet, then the reply growing, then idle and completed. Ids count up.
    let mut ids = vec![first.id.unwrap()];
    let mut states = Vec::new();
    while let Some(event) = events.next().await {
        ids.push(event.id.clone().expect("an id"));
        let done = event.data["type"] == "idle";
        states.push(event.data);
        if done {
            break;
        }
    }
    let expected_ids: Vec<String> = (0..ids.len()).map(|id| id.to_string()).collect();
    assert_eq!(ids, expected_ids);

    assert_eq!(
        states[0],
        json!({ "type": "running", "run": run, "progress": null })
    );
    assert_eq!(
        states.last(),
        Some(&idle_with(json!({ "type": "completed" })))
    );
    let replies: Vec<&str> = states[1..states.len() - 1]
        .iter()
        .map(|state| {
            assert_eq!(state["type"], "running");
            assert_eq!(state["run"], run);
            state["progress"].as_str().expect("a reply so far")
        })
        .collect();
    // Progress only grows (a slow reader may see several tokens at once), up to the full reply.
    for pair in replies.windows(2) {
        assert!(
            pair[1].starts_with(pair[0]) && pair[1].len() > pair[0].len(),
            "{pair:?}"
        );
    }
    assert_eq!(
        replies.last().copied(),
        Some(&*full_reply("hello", 8).await)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_runs_on_distinct_keys_all_complete_and_are_forgotten() {
    const RUNS: usize = 1000;
    let server = Server::start().await;
    let http = Http::new();
    let expected = full_reply("hello", 5).await;

    let mut runs = JoinSet::new();
    for index in 0..RUNS {
        let http = http.clone();
        let events_url = server.url(&format!("/agents/agent-{index}/events"));
        let run_url = server.url(&format!("/agents/agent-{index}/run"));
        runs.spawn(async move {
            let mut events = http.events(&events_url).await;
            assert_eq!(events.next_state().await, Some(idle_with(Value::Null)));
            let (status, body) = http.post(&run_url, run_body(5, 20)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            let mut last_reply = Value::Null;
            loop {
                let state = events.next_state().await.expect("the stream goes on");
                if state["type"] == "idle" {
                    assert_eq!(state, idle_with(json!({ "type": "completed" })));
                    return last_reply;
                }
                last_reply = state["progress"].clone();
            }
        });
    }
    let mut completed = 0;
    while let Some(reply) = within("1,000 runs", runs.join_next()).await {
        assert_eq!(reply.expect("the run's client task"), expected.as_str());
        completed += 1;
    }
    assert_eq!(completed, RUNS);

    // Every event stream was dropped with its client task: every key is forgotten.
    let zero = json!({ "remembered": 0, "running": 0, "live_tasks": 0 });
    wait_for_stats(&http, &server, |stats| *stats == zero).await;
    assert!(server.agents().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_releases_its_key() {
    let server = Server::start().await;
    let http = Http::new();
    let mut events = http.events(&server.url("/agents/left/events")).await;
    assert_eq!(events.next_state().await, Some(idle_with(Value::Null)));
    http.post(&server.url("/agents/left/run"), run_body(40, 10))
        .await;
    // Mid-stream: the run has started streaming tokens to this client.
    loop {
        let state = events.next_state().await.expect("the stream goes on");
        if state["progress"].is_string() {
            break;
        }
    }
    drop(events);

    // The run goes on without its watcher and completes; the server notices the closed
    // connection and drops the event stream, so the idle key is forgotten. Had the stream
    // been kept, the key would stay remembered (idle, completed) for good.
    let zero = json!({ "remembered": 0, "running": 0, "live_tasks": 0 });
    wait_for_stats(&http, &server, |stats| *stats == zero).await;

    // An idle key's stream sends nothing after its first event: the server notices the closed
    // connection all the same.
    let mut events = http.events(&server.url("/agents/quiet/events")).await;
    assert_eq!(events.next_state().await, Some(idle_with(Value::Null)));
    let watched = json!({ "remembered": 1, "running": 0, "live_tasks": 0 });
    assert_eq!(
        http.get(&server.url("/stats")).await,
        (StatusCode::OK, watched)
    );
    drop(events);
    wait_for_stats(&http, &server, |stats| *stats == zero).await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_refused_with_503_once_shutdown_has_begun() {
    let server = Server::start().await;
    let http = Http::new();
    let (status, _) = http
        .post(&server.url("/agents/a/run"), run_body(1000, 50))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // The repository's shutdown is what the server's begins with; the listener closes after.
    let streams_dropped = server.agents().shutdown(None);
    for query in ["", "?conflict=use-existing", "?conflict=replace"] {
        let url = server.url(&format!("/agents/a/run{query}"));
        let (status, body) = http.post(&url, run_body(1, 0)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{url}: {body}");
        assert_eq!(body["error"], "shutting_down");
    }
    within("the runs' streams dropped", streams_dropped).await;

    // Once the server itself has shut down, nothing answers at all.
    let url = server.url("/agents/b/run");
    server.shut_down_within(SHUTDOWN_GRACE).await;
    let refused = http
        .send(
            Method::POST,
            &url,
            Some("application/json"),
            &run_body(1, 0).to_string(),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_the_final_state_to_100_open_streams_and_returns_promptly() {
    const STREAMS: usize = 100;
    const KEYS: usize = 20;
    let server = Server::start().await;
    let http = Http::new();

    // Even keys run, odd keys are idle; five streams watch each key.
    for key in (0..KEYS).step_by(2) {
        let (status, _) = http
            .post(
                &server.url(&format!("/agents/k{key}/run")),
                run_body(1000, 50),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let mut streams = Vec::new();
    for index in 0..STREAMS {
        let key = index % KEYS;
        let mut events = http
            .events(&server.url(&format!("/agents/k{key}/events")))
            .await;
        let first = events.next_state().await.expect("the current state");
        assert_eq!(
            first["type"],
            if key.is_multiple_of(2) {
                "running"
            } else {
                "idle"
            }
        );
        streams.push((key, first, events));
    }

    let mut readers = JoinSet::new();
    for (key, first, mut events) in streams {
        readers.spawn(async move {
            let mut last = first;
            while let Some(state) = events.next_state().await {
                last = state;
            }
            (key, last)
        });
    }
    let took = server.shut_down_within(Duration::from_secs(5)).await;
    // The graceful path finished by itself: it did not wait for the grace period to run out.
    assert!(took < SHUTDOWN_GRACE, "shutdown took {took:?}");

    let mut ended = 0;
    while let Some(reader) = within("the streams' ends", readers.join_next()).await {
        let (key, last) = reader.expect("the reader task");
        let expected = if key % 2 == 0 {
            idle_with(json!({ "type": "stopped", "reason": SHUTDOWN_REASON }))
        } else {
            idle_with(Value::Null)
        };
        // Each stream ended right after its key's final state.
        assert_eq!(last, expected, "k{key}");
        ended += 1;
    }
    assert_eq!(ended, STREAMS);
}

// ---------------------------------------------------------------------------------------------
// The fake agent
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_agent_ends_its_reply_when_its_abort_signal_fires() {
    let request = RunRequest {
        prompt: "anything".to_owned(),
        tokens: Some(10),
        // A minute per token: only the signal can end the stream within the deadline.
        interval_ms: Some(agent::MAX_INTERVAL_MS),
    };
    let agent = request.validate().expect("valid bounds");
    let controller = AbortController::new();
    let mut tokens = std::pin::pin!(agent.tokens(controller.signal()));
    assert!(
        futures::poll!(tokens.next()).is_pending(),
        "the first token takes a minute"
    );
    controller.abort(None);
    assert_eq!(within("the reply's end", tokens.next()).await, None);
}
