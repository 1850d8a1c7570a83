//! The service: routes, handlers, typed errors mapped to status codes, Server-Sent Events from
//! the repository's event streams (resumable with `Last-Event-ID`), and graceful shutdown.
//!
//! `main.rs` serves it on `PORT`; the tests in `tests/web*.rs` include this file and serve it on
//! an ephemeral port, one server (and one repository) per test.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture as _};
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt as _};
use keyrunner::{
    Builder, Conflict, Event, Position, Reason, RunError, RunId, StateNode, StopError,
    TaskRunnerRepository, spawn_fn,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::agent::RunRequest;

/// The agents of this process: at most one run per key; the progress is the reply so far.
pub(crate) type Agents = TaskRunnerRepository<AgentKey, String>;

/// The reason given to runs stopped by `POST /agents/{key}/stop` without one.
pub(crate) const DEFAULT_STOP_REASON: &str = "stopped by user";

/// The reason every run still going gets when the server shuts down.
pub(crate) const SHUTDOWN_REASON: &str = "server shutting down";

/// How long a graceful shutdown may take before the remaining connections are dropped.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// How long a browser waits before it reconnects an event stream that dropped (the SSE `retry`
/// field; browsers default to about 3 seconds).
pub(crate) const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A repository whose runs are spawned on the tokio runtime this is called from.
///
/// # Panics
///
/// Outside a tokio runtime.
pub(crate) fn agents() -> Agents {
    builder().build()
}

/// The builder of [`agents`], for a repository with other settings (the tests hold fewer
/// deltas per run, to reach a resync quickly).
///
/// Any closure that spawns the run's driver is a spawner through `spawn_fn`; with keyrunner's
/// `tokio` feature, `keyrunner::tokio::TokioSpawner::current()` does the same.
///
/// # Panics
///
/// Outside a tokio runtime.
pub(crate) fn builder() -> Builder<AgentKey, String> {
    let runtime = tokio::runtime::Handle::current();
    TaskRunnerRepository::builder(spawn_fn(move |run| drop(runtime.spawn(run))))
}

/// What the handlers share: cheap to clone, as axum's state must be.
#[derive(Clone, Debug)]
struct AppState {
    agents: Agents,
}

/// The routes of the service, serving `agents`.
pub(crate) fn router(agents: Agents) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/agents", get(running_agents))
        .route("/agents/{key}", get(agent_state))
        .route("/agents/{key}/run", post(run_agent))
        .route("/agents/{key}/stop", post(stop_agent))
        .route("/agents/{key}/events", get(agent_events))
        .route("/stats", get(stats))
        .with_state(AppState { agents })
}

/// Serves `agents` on `listener` until `shutdown` resolves, then shuts down gracefully.
///
/// On shutdown, every run is stopped with [`SHUTDOWN_REASON`] and later runs are refused (503);
/// every open event stream delivers its key's final state and ends (the repository's streams
/// end by themselves once it shuts down); no new connection is accepted. This returns once
/// every connection has closed and every run's stream has been dropped, or [`SHUTDOWN_GRACE`]
/// after `shutdown` resolved, whichever comes first.
pub(crate) async fn serve(
    listener: TcpListener,
    agents: Agents,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (began, shutdown_began) = oneshot::channel();
    let app = router(agents.clone());
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // From here on runs are refused; every running key turns idle with the reason, and
            // every open event stream yields its key's final state, then ends.
            let streams_dropped = agents.shutdown(Reason::from(SHUTDOWN_REASON));
            // The receiver is gone only if the server has already stopped.
            let _ = began.send(streams_dropped);
        })
        .into_future();
    let mut server = pin!(server);
    let streams_dropped = tokio::select! {
        result = &mut server => return result,
        Ok(streams_dropped) = shutdown_began => streams_dropped,
    };
    let drained = async {
        server.await?;
        streams_dropped.await;
        Ok(())
    };
    tokio::time::timeout(SHUTDOWN_GRACE, drained)
        .await
        .unwrap_or_else(|_elapsed| {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown took too long; dropping what is left");
            Ok(())
        })
}

/// An agent's key, checked: 1 to 64 characters among `A-Z`, `a-z`, `0-9`, `_` and `-`.
///
/// As an extractor, it reads the `{key}` path parameter and rejects anything else with
/// [`ApiError::InvalidKey`], so no handler ever sees an unchecked key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct AgentKey(String);

/// The key as a string: what a run's span shows (`key="demo"`).
impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AgentKey {
    /// `key` if it is a valid agent key.
    pub(crate) fn parse(key: &str) -> Result<Self, ApiError> {
        let valid = (1..=64).contains(&key.len())
            && key
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if valid {
            Ok(Self(key.to_owned()))
        } else {
            Err(ApiError::InvalidKey)
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AgentKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(key) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::InvalidKey)?;
        Self::parse(&key)
    }
}

/// Everything a request can fail with; `IntoResponse` gives each its status code and a JSON
/// body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400: the key is outside `[A-Za-z0-9_-]{1,64}`.
    #[error("an agent key is 1 to 64 characters among A-Z, a-z, 0-9, '_' and '-'")]
    InvalidKey,
    /// 400: the body or the query string could not be used.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the key runs another run, and the conflict policy is `reject`.
    #[error("the agent is already running {running}")]
    Busy { running: RunId },
    /// 404: there is nothing to stop.
    #[error("the agent is not running")]
    NotRunning,
    /// 503: the server is shutting down and starts no more runs.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorJson {
    /// What went wrong, for programs: `invalid_key`, `bad_request`, `busy`, `not_running`,
    /// `shutting_down`.
    error: &'static str,
    /// What went wrong, for people.
    message: String,
    /// With `busy`: the id of the run holding the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, running) = match self {
            Self::InvalidKey => (StatusCode::BAD_REQUEST, "invalid_key", None),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            Self::Busy { running } => (StatusCode::CONFLICT, "busy", Some(running.get())),
            Self::NotRunning => (StatusCode::NOT_FOUND, "not_running", None),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", None),
        };
        let body = ErrorJson {
            error,
            message: self.to_string(),
            running,
        };
        (status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

/// `GET /`: the dashboard, one self-contained page.
async fn page() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

/// `GET /agents`: the keys running an agent now, sorted.
async fn running_agents(State(app): State<AppState>) -> Json<Vec<AgentKey>> {
    let mut keys = app.agents.running_keys();
    keys.sort_unstable();
    Json(keys)
}

/// `GET /agents/{key}`: the key's state now, in the repository's wire format
/// (`docs/wire-format.md`).
async fn agent_state(State(app): State<AppState>, key: AgentKey) -> Response {
    Json(app.agents.state(&key)).into_response()
}

/// The query string of `POST /agents/{key}/run`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    /// What to do if the key is running: `reject` (the default), `use-existing`, `replace`.
    #[serde(default)]
    conflict: ConflictPolicy,
}

/// [`Conflict`], as the query string spells it.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ConflictPolicy {
    #[default]
    Reject,
    UseExisting,
    Replace,
}

impl From<ConflictPolicy> for Conflict {
    fn from(policy: ConflictPolicy) -> Self {
        match policy {
            ConflictPolicy::Reject => Self::Reject,
            ConflictPolicy::UseExisting => Self::UseExisting,
            ConflictPolicy::Replace => Self::Replace,
        }
    }
}

/// The body of a successful `POST /agents/{key}/run` and `POST /agents/{key}/stop`.
#[derive(Debug, Serialize)]
struct RunJson {
    /// The run started (202), the run already going on (200, with `use-existing`), or the run
    /// stopped.
    run: u64,
    /// With a stop: the reason given to the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `POST /agents/{key}/run?conflict=…` with `{"prompt": …, "tokens": …, "interval_ms": …}`:
/// 202 with the new run's id; 200 with the running run's id under `use-existing`; 409 when the
/// key runs and the policy is `reject`; 503 once shutdown has begun.
///
/// The decision is taken on a [`StateNode`]: only an idle node can run, only a running node can
/// be stopped, and a node acts once. A node that went stale in between (another request won
/// the key, or its run ended) fails with a typed error, and we look again.
async fn run_agent(
    State(app): State<AppState>,
    key: AgentKey,
    query: Result<Query<RunQuery>, QueryRejection>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RunJson>), ApiError> {
    let Query(RunQuery { conflict }) = query?;
    let Json(request) = body?;
    let agent = request.validate().map_err(ApiError::BadRequest)?;
    let conflict = Conflict::from(conflict);
    let started = |run: RunId, status| {
        let body = RunJson {
            run: run.get(),
            reason: None,
        };
        Ok((status, Json(body)))
    };
    loop {
        match (app.agents.state_node(key.clone()), conflict) {
            (StateNode::Idle(idle), _) => match idle.run(agent.clone().task()) {
                Ok(run) => return started(run.run_id(), StatusCode::ACCEPTED),
                // Another request started a run since we looked.
                Err(RunError::Busy { running, .. }) if conflict == Conflict::Reject => {
                    return Err(ApiError::Busy { running });
                }
                Err(RunError::Busy { .. }) => continue,
                // The repository refuses runs once shutdown has begun; the runtime refuses
                // to spawn while it shuts down.
                Err(RunError::ShutDown { .. } | RunError::Spawn { .. }) => {
                    return Err(ApiError::ShuttingDown);
                }
            },
            (StateNode::Running(running), Conflict::Reject) => {
                return Err(ApiError::Busy {
                    running: running.run_id(),
                });
            }
            (StateNode::Running(running), Conflict::UseExisting) => {
                return started(running.run_id(), StatusCode::OK);
            }
            (StateNode::Running(running), Conflict::Replace) => {
                // If that run ended meanwhile, the node is stale and nothing changes: either
                // way, the next look finds the key idle or running someone else's run.
                let _ = running.stop(Reason::superseded());
            }
        }
    }
}

/// The optional body of `POST /agents/{key}/stop`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    /// Why the run is stopped; [`DEFAULT_STOP_REASON`] if absent.
    reason: Option<String>,
}

/// `POST /agents/{key}/stop` with an optional `{"reason": …}`: 200 with the stopped run's id
/// and the reason, 404 when the key is idle.
///
/// `stop(&key, …)` stops whichever run is current at that instant; a handler that must stop
/// one particular run takes a [`StateNode`] instead (as `run_agent` does to replace).
async fn stop_agent(
    State(app): State<AppState>,
    key: AgentKey,
    body: Result<Option<Json<StopRequest>>, JsonRejection>,
) -> Result<Json<RunJson>, ApiError> {
    let reason = body?
        .and_then(|Json(request)| request.reason)
        .unwrap_or_else(|| DEFAULT_STOP_REASON.to_owned());
    match app.agents.stop(&key, Reason::from(reason.as_str())) {
        Ok(run) => Ok(Json(RunJson {
            run: run.get(),
            reason: Some(reason),
        })),
        Err(StopError::Idle | StopError::Ended { .. }) => Err(ApiError::NotRunning),
    }
}

/// `GET /agents/{key}/events`: Server-Sent Events of the key's [`Event`]s, each with its
/// [`Position`] as its id and the event in the repository's wire format as its data.
///
/// - `state`: the key's state; replace what you show. The first event of a connection, a run's
///   start and end.
/// - `delta`: a token of the running reply; append it.
/// - `resync`: the key's state, sent instead of a `state` when events were skipped since the
///   previous one the client got (see [`Resume`]); replace what you show.
///
/// A reconnecting browser sends the id of the last event it got as `Last-Event-ID`, and the
/// stream resumes right after it: nothing repeated, nothing skipped while the run's deltas are
/// still held, a `resync` otherwise. On shutdown the stream delivers the key's final state and
/// ends.
async fn agent_events(
    State(app): State<AppState>,
    key: AgentKey,
    resume: Resume,
) -> Sse<impl Stream<Item = Result<sse::Event, axum::Error>>> {
    let (events, mut seen) = match resume {
        Resume::After(position) => (app.agents.stream_after(key, position), Seen::at(position)),
        Resume::Fresh => (app.agents.stream(key), Seen::nothing()),
        Resume::Unknown => (app.agents.stream(key), Seen::unknown()),
    };
    let mut first = true;
    let events = events.map(move |event| {
        let mut sse = sse::Event::default()
            .event(seen.kind(&event))
            .id(event.position().to_string());
        if std::mem::take(&mut first) {
            sse = sse.retry(RECONNECT_AFTER);
        }
        sse.json_data(&event)
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Where a client's previous connection to an event stream left off: its `Last-Event-ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// A first connection: no `Last-Event-ID`.
    Fresh,
    /// A reconnection: the position of the last event the client got.
    After(Position),
    /// A `Last-Event-ID` that is no position: the client shows something, we cannot tell what.
    Unknown,
}

impl<S: Send + Sync> FromRequestParts<S> for Resume {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let Some(id) = parts.headers.get("last-event-id") else {
            return Ok(Self::Fresh);
        };
        Ok(id
            .to_str()
            .ok()
            .and_then(|id| id.parse().ok())
            .map_or(Self::Unknown, Self::After))
    }
}

/// What a client has got of a key's events, to tell a `state` that follows the previous event
/// from a `resync` that skips some.
///
/// A state follows the previous event when it is the next one of the same run (its next item,
/// or its end), or the start of a run after the client saw the previous run end. Anything else
/// skipped something: a reconnect past the deltas the repository holds, a stream whose
/// consumer fell far behind, or a run that started and maybe ended while the client was away.
/// When in doubt, `resync`: it only makes the client replace what it shows, which is always
/// correct.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// The position of the last event sent, or of the last one the client got before it
    /// reconnected.
    last: Option<Position>,
    /// Whether that event is known to be an idle state (a run's end, or a key that never ran).
    idle: bool,
    /// Whether the client shows something we know nothing about.
    unknown: bool,
}

impl Seen {
    fn nothing() -> Self {
        Self {
            last: None,
            idle: false,
            unknown: false,
        }
    }

    fn at(position: Position) -> Self {
        Self {
            last: Some(position),
            // `0.0` is the state of a key that never ran (or was forgotten): idle. Any other
            // position may be a run's end or not.
            idle: position.run_id().is_none(),
            ..Self::nothing()
        }
    }

    fn unknown() -> Self {
        Self {
            unknown: true,
            ..Self::nothing()
        }
    }

    /// The SSE event type of `event`, the next event sent: `state`, `delta` or `resync`.
    fn kind<P, E>(&mut self, event: &Event<P, E>) -> &'static str {
        let position = event.position();
        let kind = match (event, self.last) {
            (Event::Delta { .. }, _) => "delta",
            (Event::State { .. }, None) if !self.unknown => "state",
            (Event::State { .. }, Some(last))
                if (position.run_id() == last.run_id() && position.seq() == last.seq() + 1)
                    || (self.idle && position.seq() == 0 && position > last) =>
            {
                "state"
            }
            (Event::State { .. }, _) => "resync",
        };
        self.last = Some(position);
        self.idle = event.state().is_some_and(|state| state.is_idle());
        self.unknown = false;
        kind
    }
}

/// The body of `GET /stats`.
#[derive(Debug, Serialize)]
struct StatsJson {
    /// Keys the repository remembers: running, watched, or held by a handle.
    remembered: usize,
    /// Keys running an agent.
    running: usize,
    /// Task streams still alive (a stopped run's counts until its stream is dropped).
    live_tasks: usize,
}

/// `GET /stats`: how many keys the repository remembers, and how many run; a key nobody runs
/// or watches is released, so both return to zero.
async fn stats(State(app): State<AppState>) -> Json<StatsJson> {
    Json(StatsJson {
        remembered: app.agents.len(),
        running: app.agents.running_keys().len(),
        live_tasks: app.agents.live_tasks(),
    })
}
