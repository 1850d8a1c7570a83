//! Ending event streams when the server shuts down.
//!
//! Today a repository's `StateStream` never ends by itself, so an open `GET
//! /agents/{key}/events` would hold its connection (and the graceful shutdown) forever. Once the
//! repository's streams end after shutdown by themselves (with the key's final state), this
//! module goes.

use std::task::Poll;

use futures::{FutureExt as _, Stream, StreamExt as _, stream};
use keyrunner::AbortController;

/// Fired once the server has begun to shut down, after the repository has stopped every run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Closing(AbortController);

impl Closing {
    /// Ends every stream wrapped by [`end_on_close`](Self::end_on_close).
    ///
    /// Call it after the repository's `shutdown`: every run is stopped by then, so every
    /// wrapped stream has its key's final state queued and delivers it before ending.
    pub(crate) fn close(&self) {
        self.0.abort(None);
    }

    /// `states`, ending once [`close`](Self::close) has been called and no state is queued.
    pub(crate) fn end_on_close<St>(&self, mut states: St) -> impl Stream<Item = St::Item> + use<St>
    where
        St: Stream + Unpin,
    {
        let mut closed = self.0.signal().aborted();
        stream::poll_fn(move |cx| match states.poll_next_unpin(cx) {
            Poll::Ready(state) => Poll::Ready(state),
            // Nothing queued: if the server is closing, every state has been delivered.
            Poll::Pending => closed.poll_unpin(cx).map(|()| None),
        })
    }
}
