//! The service: routes, handlers, typed errors mapped to status codes, Server-Sent Events from
//! the repository's state streams, and graceful shutdown.
//!
//! `main.rs` serves it on `PORT`; the tests in `tests/web*.rs` include this file and serve it on
//! an ephemeral port, one server (and one repository) per test.

use std::future::{Future, IntoFuture as _};
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt as _};
use keyrunner::{Conflict, Reason, RunError, RunId, StateNode, TaskRunnerRepository, spawn_fn};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::agent::RunRequest;
use crate::closing::Closing;
use crate::wire::StateJson;

/// The agents of this process: at most one run per key; the progress is the reply so far.
pub(crate) type Agents = TaskRunnerRepository<AgentKey, String>;

/// The reason given to runs stopped by `POST /agents/{key}/stop` without one.
pub(crate) const DEFAULT_STOP_REASON: &str = "stopped by user";

/// The reason every run still going gets when the server shuts down.
pub(crate) const SHUTDOWN_REASON: &str = "server shutting down";

/// How long a graceful shutdown may take before the remaining connections are dropped.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// A repository whose runs are spawned on the tokio runtime this is called from.
///
/// Any closure that spawns the run's driver is a spawner through `spawn_fn`; with keyrunner's
/// `tokio` feature,
/// `keyrunner::tokio::TokioSpawner::current()` does the same.
///
/// # Panics
///
/// Outside a tokio runtime.
pub(crate) fn agents() -> Agents {
    let runtime = tokio::runtime::Handle::current();
    TaskRunnerRepository::new(spawn_fn(move |run| drop(runtime.spawn(run))))
}

/// What the handlers share: cheap to clone, as axum's state must be.
#[derive(Clone, Debug)]
struct AppState {
    agents: Agents,
    closing: Closing,
}

/// The routes of the service, serving `agents`.
pub(crate) fn router(agents: Agents, closing: Closing) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/agents", get(running_agents))
        .route("/agents/{key}", get(agent_state))
        .route("/agents/{key}/run", post(run_agent))
        .route("/agents/{key}/stop", post(stop_agent))
        .route("/agents/{key}/events", get(agent_events))
        .route("/stats", get(stats))
        .with_state(AppState { agents, closing })
}

/// Serves `agents` on `listener` until `shutdown` resolves, then shuts down gracefully.
///
/// On shutdown, every run is stopped with [`SHUTDOWN_REASON`] and later runs are refused (503);
/// every open event stream delivers its key's final state and ends; no new connection is
/// accepted. This returns once every connection has closed and every run's stream has been
/// dropped, or [`SHUTDOWN_GRACE`] after `shutdown` resolved, whichever comes first.
pub(crate) async fn serve(
    listener: TcpListener,
    agents: Agents,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let closing = Closing::default();
    let (began, shutdown_began) = oneshot::channel();
    let app = router(agents.clone(), closing.clone());
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // From here on runs are refused; every running key turns idle with the reason, and
            // every open event stream has that final state queued.
            let streams_dropped = agents.shutdown(Reason::from(SHUTDOWN_REASON));
            closing.close();
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
            eprintln!("shutdown took longer than {SHUTDOWN_GRACE:?}; dropping what is left");
            Ok(())
        })
}

/// An agent's key, checked: 1 to 64 characters among `A-Z`, `a-z`, `0-9`, `_` and `-`.
///
/// As an extractor, it reads the `{key}` path parameter and rejects anything else with
/// [`ApiError::InvalidKey`], so no handler ever sees an unchecked key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct AgentKey(String);

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

/// `GET /agents/{key}`: the key's state now.
async fn agent_state(State(app): State<AppState>, key: AgentKey) -> Response {
    Json(StateJson::new(&app.agents.state(&key))).into_response()
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
async fn stop_agent(
    State(app): State<AppState>,
    key: AgentKey,
    body: Result<Option<Json<StopRequest>>, JsonRejection>,
) -> Result<Json<RunJson>, ApiError> {
    let reason = body?
        .and_then(|Json(request)| request.reason)
        .unwrap_or_else(|| DEFAULT_STOP_REASON.to_owned());
    loop {
        match app.agents.state_node(key.clone()) {
            StateNode::Idle(_) => return Err(ApiError::NotRunning),
            StateNode::Running(running) => {
                let run = running.run_id();
                // A stale node (that run ended since we looked) stops nothing: look again.
                if running.stop(Reason::from(reason.as_str())).is_ok() {
                    return Ok(Json(RunJson {
                        run: run.get(),
                        reason: Some(reason),
                    }));
                }
            }
        }
    }
}

/// `GET /agents/{key}/events`: Server-Sent Events, each a `state` event whose data is the
/// key's state as JSON: the current state first, then every transition in order. On shutdown
/// the stream delivers the key's final state and ends.
async fn agent_events(
    State(app): State<AppState>,
    key: AgentKey,
) -> Sse<impl Stream<Item = Result<Event, axum::Error>>> {
    // The agent streams snapshots (the reply so far), so every event is a state.
    let states = app
        .closing
        .end_on_close(app.agents.stream(key))
        .filter_map(|event| std::future::ready(event.into_state()));
    let events = states.enumerate().map(|(index, state)| {
        Event::default()
            .event("state")
            .id(event_id(index))
            .json_data(StateJson::new(&state))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The id of the `index`th event of one event stream.
///
/// For now, the event's place in its own stream: it tells a client how far it got, but a new
/// stream starts from the key's current state whatever `Last-Event-ID` it is sent. Positions
/// that a reconnecting client can resume from come with the repository's delta streams.
fn event_id(index: usize) -> String {
    index.to_string()
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
