//! A live dashboard of streaming agents, served over HTTP with Server-Sent Events.
//!
//! Run it with `cargo run --example web` and open the address it prints (`PORT` picks the port,
//! 3000 by default; `PORT=0` takes any free one). Start agents from the page, or with curl:
//!
//! ```sh
//! curl -X POST localhost:3000/agents/demo/run -H 'content-type: application/json' \
//!      -d '{"prompt": "hello", "tokens": 200, "interval_ms": 50}'
//! curl -N localhost:3000/agents/demo/events       # watch it live
//! curl -X POST localhost:3000/agents/demo/stop    # stop it
//! ```
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard page |
//! | `POST /agents/{key}/run?conflict=reject\|use-existing\|replace` | start an agent: 202 with its run id, 200 with the running one's under `use-existing`, 409 naming the running run, 400 for a bad key or body, 503 once shutting down |
//! | `POST /agents/{key}/stop` | stop it, with an optional `{"reason": …}`: 200, or 404 when idle |
//! | `GET /agents/{key}` | its state as JSON |
//! | `GET /agents/{key}/events` | its state, then every event (the reply token by token), as Server-Sent Events; resumes after `Last-Event-ID` |
//! | `GET /agents` | the keys running now |
//! | `GET /stats` | keys remembered and running, task streams alive |
//!
//! Ctrl-C stops every agent with a reason, lets every open event stream deliver its final state,
//! and exits within 5 seconds. The walk-through is docs/web-service.md.
//!
//! Every run is traced (keyrunner's `tracing` feature): a span with its key and run id, and
//! events for its start and end, on stderr. `RUST_LOG` filters them, `info` by default;
//! `RUST_LOG=keyrunner=trace` adds an event per token.

mod agent;
mod app;

use std::env::{self, VarError};
use std::error::Error;
use std::net::Ipv4Addr;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The port when `PORT` is not set.
const DEFAULT_PORT: u16 = 3000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .map_err(|error| format!("RUST_LOG: {error}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let port = match env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|error| format!("PORT={port:?} is not a port number: {error}"))?,
        Err(VarError::NotPresent) => DEFAULT_PORT,
        Err(error) => return Err(format!("PORT: {error}").into()),
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    app::serve(listener, app::agents(), ctrl_c()).await?;
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT). If it cannot be watched, never: the server then runs until
/// it is killed.
async fn ctrl_c() {
    match tokio::signal::ctrl_c().await {
        Ok(()) => tracing::info!("Ctrl-C: shutting down"),
        Err(error) => {
            tracing::error!(%error, "cannot watch for Ctrl-C; stop the server by killing it");
            std::future::pending::<()>().await;
        }
    }
}
