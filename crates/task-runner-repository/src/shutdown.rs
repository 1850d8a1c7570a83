//! [`Shutdown`]: waits until every task stream of a repository has been dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::EventListener;

use crate::run::LiveTasks;

/// Future returned by `shutdown`: resolves once every task stream has been dropped.
///
/// The runs were stopped when `shutdown` was called, whether or not this future is polled.
#[must_use = "the runs are already stopped; await this to wait until their streams are dropped"]
pub struct Shutdown {
    live: Arc<LiveTasks>,
    listener: Option<EventListener>,
}

impl Shutdown {
    pub(crate) fn new(live: Arc<LiveTasks>) -> Self {
        Self {
            live,
            listener: None,
        }
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.live.get() == 0 {
                self.listener = None;
                return Poll::Ready(());
            }
            match self.listener.as_mut() {
                None => {
                    let listener = self.live.listen();
                    self.listener = Some(listener);
                }
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("live_tasks", &self.live.get())
            .finish_non_exhaustive()
    }
}
