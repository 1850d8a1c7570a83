//! The `web` example over HTTP: every route and status, the order and ids of its Server-Sent
//! Events, a reconnect resuming with `Last-Event-ID` (and a resync past the deltas held), 1,000
//! concurrent runs, a client leaving mid-stream, and a graceful shutdown with 100 open event
//! streams.
//!
//! Each test starts the example's server on an ephemeral port (see `web_support`) and talks to
//! it with a plain HTTP/1 client. Every wait has a deadline; nothing sleeps to order events.

#[path = "../examples/web/agent.rs"]
mod agent;
#[path = "../examples/web/app.rs"]
mod app;
mod web_support;

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyrunner::{AbortController, Position};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::agent::{RunRequest, reply_tokens};
use crate::app::{DEFAULT_STOP_REASON, RECONNECT_AFTER, SHUTDOWN_GRACE, SHUTDOWN_REASON};
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
        self.request(request, body).await
    }

    async fn request(
        &self,
        request: hyper::http::request::Builder,
        body: &str,
    ) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("a valid request");
        let url = request.uri().to_string();
        within(&url, self.client.request(request)).await
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
        self.events_with(url, None).await
    }

    /// Opens an event stream as a browser reconnecting after the event `last_event_id`.
    async fn events_after(&self, url: &str, last_event_id: &str) -> Events {
        self.events_with(url, Some(last_event_id)).await
    }

    async fn events_with(&self, url: &str, last_event_id: Option<&str>) -> Events {
        let mut request = Request::builder().method(Method::GET).uri(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = self
            .request(request, "")
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
    id: String,
    /// `state`, `delta` or `resync`.
    event: String,
    /// The event in the repository's wire format.
    data: Value,
    retry: Option<Duration>,
}

impl SseEvent {
    /// The key's state, for a `state` or `resync` event.
    fn state(&self) -> &Value {
        assert_ne!(self.event, "delta", "{self:?}");
        &self.data["state"]
    }

    /// The token, for a `delta` event.
    fn delta(&self) -> &str {
        assert_eq!(self.event, "delta", "{self:?}");
        self.data["delta"].as_str().expect("a string delta")
    }

    fn position(&self) -> Position {
        self.id.parse().expect("every id is a position")
    }
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

    /// The next event, which must be a `state` event: its state.
    async fn next_state(&mut self) -> Option<Value> {
        let event = self.next().await?;
        assert_eq!(event.event, "state", "{event:?}");
        Some(event.state().clone())
    }
}

/// One event block, or `None` for a comment-only block (a keep-alive).
fn parse_event(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data, mut retry) = (None, None, Vec::new(), None);
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => retry = Some(Duration::from_millis(value.parse().expect("retry in ms"))),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    let data: Value = serde_json::from_str(&data.join("\n")).expect("JSON event data");
    let event = SseEvent {
        id: id.expect("every event carries an id"),
        event: event.expect("every event is named"),
        data,
        retry,
    };
    // The id is the event's position, which the data carries too.
    assert_eq!(event.data["position"], event.id.as_str(), "{event:?}");
    let expected_type = if event.event == "delta" {
        "delta"
    } else {
        "state"
    };
    assert_eq!(event.data["type"], expected_type, "{event:?}");
    Some(event)
}

/// A client's view of a key's reply, built from events as a browser builds it: a `state` or
/// `resync` replaces it, a `delta` is appended to it.
#[derive(Debug, Default)]
struct Reply {
    text: String,
    last: Option<Position>,
    resyncs: usize,
}

impl Reply {
    /// Applies `event`; checks that it comes after the last one, and that a delta comes right
    /// after it (no token repeated, none missing).
    fn apply(&mut self, event: &SseEvent) {
        let position = event.position();
        if let Some(last) = self.last {
            assert!(position > last, "{position} after {last}: a repeat");
        }
        match event.event.as_str() {
            "delta" => {
                let last = self.last.expect("a delta follows a state");
                assert_eq!(
                    (position.run_id(), position.seq()),
                    (last.run_id(), last.seq() + 1),
                    "a delta right after the previous event"
                );
                self.text.push_str(event.delta());
            }
            kind => {
                if kind == "resync" {
                    self.resyncs += 1;
                }
                let progress = &event.state()["progress"];
                self.text = progress.as_str().unwrap_or_default().to_owned();
            }
        }
        self.last = Some(position);
    }
}

/// A run request as JSON.
fn run_body(tokens: u32, interval_ms: u64) -> Value {
    json!({ "prompt": "hello", "tokens": tokens, "interval_ms": interval_ms })
}

/// The full reply the fake agent gives to `prompt` in `tokens` tokens.
fn full_reply(prompt: &str, tokens: u32) -> String {
    reply_tokens(prompt, tokens).collect()
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

/// The state of a key that never ran (or was forgotten).
fn never_ran() -> Value {
    json!({ "type": "idle", "last": null, "progress": null })
}

/// An idle state that ended as `last`; its final reply is not checked.
fn assert_idle(state: &Value, last: Value) {
    assert_eq!(state["type"], "idle", "{state}");
    assert_eq!(state["last"], last, "{state}");
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
    while let Some(event) = events.next().await {
        if event.event == "delta" {
            continue;
        }
        let state = event.state().clone();
        let done = state["type"] == "running" && state["run"] == second_run;
        seen.push(state);
        if done {
            break;
        }
    }
    let superseded = json!({ "type": "stopped", "reason": "superseded" });
    assert!(
        seen.iter()
            .any(|state| state["type"] == "idle" && state["last"] == superseded),
        "{seen:?}"
    );

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
    assert_eq!(events.next_state().await, Some(never_ran()));

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
    let (status, stopped) = http.get(&state).await;
    assert_eq!(status, StatusCode::OK);
    assert_idle(
        &stopped,
        json!({ "type": "stopped", "reason": DEFAULT_STOP_REASON }),
    );

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
    let (status, stopped) = http.get(&state).await;
    assert_eq!(status, StatusCode::OK);
    assert_idle(
        &stopped,
        json!({ "type": "stopped", "reason": "user left" }),
    );

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
        (StatusCode::OK, never_ran())
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
async fn events_are_the_current_state_then_every_token_then_the_end_in_order() {
    let server = Server::start().await;
    let http = Http::new();
    let mut events = http.events(&server.url("/agents/story/events")).await;

    let first = events.next().await.expect("the current state");
    assert_eq!(first.event, "state");
    assert_eq!(first.id, "0.0");
    assert_eq!(first.state(), &never_ran());
    // The first event tells the browser how soon to reconnect.
    assert_eq!(first.retry, Some(RECONNECT_AFTER));

    let (_, started) = http
        .post(&server.url("/agents/story/run"), run_body(8, 10))
        .await;
    let run = started["run"].as_u64().expect("a run id");

    // The run's start, each token as a delta, then its end with the whole reply; the ids are
    // the events' positions: run and sequence number.
    let start = events.next().await.expect("the run's start");
    assert_eq!(start.event, "state");
    assert_eq!(start.id, format!("{run}.0"));
    assert_eq!(
        start.state(),
        &json!({ "type": "running", "run": run, "progress": null })
    );
    let tokens: Vec<String> = reply_tokens("hello", 8).collect();
    for (seq, token) in (1..).zip(&tokens) {
        let delta = events.next().await.expect("a token");
        assert_eq!(delta.id, format!("{run}.{seq}"));
        assert_eq!(
            delta.data,
            json!({ "type": "delta", "position": delta.id, "delta": token })
        );
        assert_eq!(delta.retry, None);
    }
    let end = events.next().await.expect("the run's end");
    assert_eq!(end.event, "state");
    assert_eq!(end.id, format!("{run}.9"));
    assert_eq!(
        end.state(),
        &json!({ "type": "idle", "last": { "type": "completed" }, "progress": full_reply("hello", 8) })
    );
}

/// Polls the repository until `key`'s reply has at least `words` words; fails after
/// [`DEADLINE`].
async fn wait_for_words(server: &Server, key: &str, words: usize) {
    let key = app::AgentKey::parse(key).expect("a valid key");
    let started = Instant::now();
    loop {
        let state = server.agents().state(&key);
        let now = state
            .progress()
            .map_or(0, |reply| reply.split_whitespace().count());
        if now >= words {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{key:?}: {now} words after {DEADLINE:?}, waiting for {words}: {state:?}"
        );
        // A watchdog poll, not an ordering: the condition is checked again until the deadline.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_resumes_the_reply_with_no_token_repeated_or_missing() {
    const TOKENS: u32 = 40;
    let server = Server::start().await;
    let http = Http::new();
    let url = server.url("/agents/blip/events");
    let mut events = http.events(&url).await;
    let mut reply = Reply::default();
    reply.apply(&events.next().await.expect("the current state"));
    let (status, _) = http
        .post(&server.url("/agents/blip/run"), run_body(TOKENS, 10))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // The client gets the run's start and a few tokens, then its connection drops.
    while reply.text.split_whitespace().count() < 5 {
        reply.apply(&events.next().await.expect("the stream goes on"));
    }
    drop(events);
    // The agent goes on while the client is away.
    wait_for_words(&server, "blip", 12).await;

    // The browser reconnects by itself, sending the id of the last event it got.
    let last = reply.last.expect("events were received").to_string();
    let mut events = http.events_after(&url, &last).await;
    let first = events.next().await.expect("the stream resumes");
    assert_eq!(
        first.event, "delta",
        "the token right after {last}: {first:?}"
    );
    reply.apply(&first);
    let end = loop {
        let event = events.next().await.expect("the stream goes on");
        if event.event != "delta" && event.state()["type"] == "idle" {
            break event;
        }
        reply.apply(&event);
    };
    // The reply reassembled from the tokens of both connections is the whole reply, before the
    // end's state replaces it (with the same text).
    assert_eq!(reply.text, full_reply("hello", TOKENS));
    assert_eq!(reply.resyncs, 0);
    assert_eq!(end.event, "state");
    assert_eq!(end.state()["progress"], full_reply("hello", TOKENS));

    // A client that got the end reconnects to an idle key: nothing is repeated, and the next
    // run arrives as usual.
    let mut events = http.events_after(&url, &end.id).await;
    let (_, started) = http
        .post(&server.url("/agents/blip/run"), run_body(1, 0))
        .await;
    let next = events.next().await.expect("the next run's start");
    assert_eq!(next.id, format!("{}.0", started["run"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_that_missed_nothing_goes_on_with_the_next_event() {
    let server = Server::start().await;
    let http = Http::new();
    let url = server.url("/agents/calm/events");
    // The client had the key's state (it never ran) when its connection dropped.
    let mut events = http.events_after(&url, "0.0").await;
    let (_, started) = http
        .post(&server.url("/agents/calm/run"), run_body(2, 0))
        .await;
    let run = started["run"].as_u64().expect("a run id");
    let start = events.next().await.expect("the run's start");
    assert_eq!(
        (start.event.as_str(), start.id.clone()),
        ("state", format!("{run}.0"))
    );
    // The client saw `0.0`.
    let mut reply = Reply {
        last: Some(Position::default()),
        ..Reply::default()
    };
    reply.apply(&start);
    let end = loop {
        let event = events.next().await.expect("the stream goes on");
        if event.event != "delta" {
            break event;
        }
        reply.apply(&event);
    };
    assert_eq!(reply.text, full_reply("hello", 2));
    assert_eq!(
        (end.event.as_str(), end.id.as_str()),
        ("state", &*format!("{run}.3"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_past_the_deltas_held_gets_a_resync_then_the_tokens_after_it() {
    const TOKENS: u32 = 40;
    // The repository holds at most 4 deltas of a run: a client 10 tokens behind cannot be
    // given the tokens it missed.
    let server = Server::start_with(app::builder().max_deltas(4).build()).await;
    let http = Http::new();
    let url = server.url("/agents/far/events");
    let mut events = http.events(&url).await;
    let mut reply = Reply::default();
    reply.apply(&events.next().await.expect("the current state"));
    http.post(&server.url("/agents/far/run"), run_body(TOKENS, 10))
        .await;
    while reply.text.is_empty() {
        reply.apply(&events.next().await.expect("the stream goes on"));
    }
    drop(events);
    wait_for_words(&server, "far", 12).await;

    let last = reply.last.expect("events were received");
    let mut events = http.events_after(&url, &last.to_string()).await;
    let resync = events.next().await.expect("the stream resumes");
    assert_eq!(resync.event, "resync", "{resync:?}");
    assert_eq!(resync.state()["type"], "running");
    assert!(resync.position() > last, "{resync:?}");
    let caught_up = resync.state()["progress"]
        .as_str()
        .expect("the reply so far");
    assert!(caught_up.split_whitespace().count() >= 12, "{caught_up}");
    reply.apply(&resync);
    // Then every token after it, in order, up to the end.
    let end = loop {
        let event = events.next().await.expect("the stream goes on");
        if event.event != "delta" && event.state()["type"] == "idle" {
            break event;
        }
        reply.apply(&event);
    };
    assert_eq!(reply.text, full_reply("hello", TOKENS));
    assert_eq!(reply.resyncs, 1);
    assert_eq!(end.event, "state");

    // A client away for the end of the run gets the final state as a resync.
    let mut events = http.events_after(&url, &last.to_string()).await;
    let resync = events.next().await.expect("the final state");
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.state(), end.state());

    // So does a client whose `Last-Event-ID` is no position.
    let mut events = http.events_after(&url, "yesterday").await;
    let resync = events.next().await.expect("the current state");
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.state(), end.state());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_runs_on_distinct_keys_all_complete_and_are_forgotten() {
    const RUNS: usize = 1000;
    let server = Server::start().await;
    let http = Http::new();
    let expected = full_reply("hello", 5);

    let mut runs = JoinSet::new();
    for index in 0..RUNS {
        let http = http.clone();
        let events_url = server.url(&format!("/agents/agent-{index}/events"));
        let run_url = server.url(&format!("/agents/agent-{index}/run"));
        runs.spawn(async move {
            let mut events = http.events(&events_url).await;
            assert_eq!(events.next_state().await, Some(never_ran()));
            let (status, body) = http.post(&run_url, run_body(5, 20)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            // The reply as the client builds it from the tokens, before the end replaces it.
            let mut reply = Reply::default();
            loop {
                let event = events.next().await.expect("the stream goes on");
                if event.event != "delta" && event.state()["type"] == "idle" {
                    assert_eq!(event.event, "state");
                    assert_idle(event.state(), json!({ "type": "completed" }));
                    assert_eq!(event.state()["progress"], reply.text.as_str());
                    assert_eq!(reply.resyncs, 0);
                    return reply.text;
                }
                reply.apply(&event);
            }
        });
    }
    let mut completed = 0;
    while let Some(reply) = within("1,000 runs", runs.join_next()).await {
        assert_eq!(reply.expect("the run's client task"), expected);
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
    assert_eq!(events.next_state().await, Some(never_ran()));
    http.post(&server.url("/agents/left/run"), run_body(40, 10))
        .await;
    // Mid-stream: the run has started streaming tokens to this client.
    loop {
        let event = events.next().await.expect("the stream goes on");
        if event.event == "delta" {
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
    assert_eq!(events.next_state().await, Some(never_ran()));
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
            while let Some(event) = events.next().await {
                if event.event != "delta" {
                    last = event.state().clone();
                }
            }
            (key, last)
        });
    }
    let took = server.shut_down_within(Duration::from_secs(5)).await;
    // The graceful path finished by itself: it did not wait for the grace period to run out.
    // Nothing but the repository ends the event streams, so each of them ended by itself once
    // the repository had shut down; an open one would hold its connection, and `serve`, until
    // the grace period ran out.
    assert!(took < SHUTDOWN_GRACE, "shutdown took {took:?}");

    let mut ended = 0;
    while let Some(reader) = within("the streams' ends", readers.join_next()).await {
        let (key, last) = reader.expect("the reader task");
        // Each stream ended right after its key's final state.
        if key.is_multiple_of(2) {
            assert_idle(
                &last,
                json!({ "type": "stopped", "reason": SHUTDOWN_REASON }),
            );
        } else {
            assert_eq!(last, never_ran(), "k{key}");
        }
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
