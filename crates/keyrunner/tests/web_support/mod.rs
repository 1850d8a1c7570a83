//! What the web example's tests share: its server on an ephemeral port, with a shutdown
//! trigger.
//!
//! The tests include the example's modules (`#[path = "../examples/web/…"]`) and run its
//! `serve` in their own process, one server and one repository per test, so tests run in
//! parallel and can reach into the repository. `main.rs` adds only the port and the Ctrl-C
//! future on top.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{self, Agents};

/// The example's server, running on `127.0.0.1` on a port of its own.
pub(crate) struct Server {
    addr: SocketAddr,
    agents: Agents,
    shutdown: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Starts a server with a fresh repository.
    pub(crate) async fn start() -> Self {
        Self::start_with(app::agents()).await
    }

    /// Starts a server on `agents`.
    pub(crate) async fn start_with(agents: Agents) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind an ephemeral port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (shutdown, signal) = oneshot::channel::<()>();
        let served = tokio::spawn(app::serve(listener, agents.clone(), async {
            // A dropped sender (the test ended) shuts down too.
            let _ = signal.await;
        }));
        Self {
            addr,
            agents,
            shutdown: Some(shutdown),
            served,
        }
    }

    /// The server's address: `127.0.0.1` and a port of its own.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The server's repository, for what HTTP cannot show.
    pub(crate) fn agents(&self) -> &Agents {
        &self.agents
    }

    /// Begins the graceful shutdown (what Ctrl-C does in `main.rs`).
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Begins the graceful shutdown and waits until `serve` has returned, at most `bound`;
    /// returns how long it took.
    ///
    /// # Panics
    ///
    /// If `serve` fails or takes longer than `bound`.
    pub(crate) async fn shut_down_within(mut self, bound: Duration) -> Duration {
        let began = Instant::now();
        self.begin_shutdown();
        match tokio::time::timeout(bound, &mut self.served).await {
            Ok(served) => served
                .expect("the server task does not panic")
                .expect("the server shuts down cleanly"),
            Err(_) => panic!("the server did not shut down within {bound:?}"),
        }
        began.elapsed()
    }
}
