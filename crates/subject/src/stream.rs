//! The latest-value [`SubjectStream`].

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::EventListener;
use futures_core::{FusedStream, Stream};

use crate::subject::Inner;
use crate::sync::Ordering;

/// What a stream finds when it looks at its subject.
enum Latest<T> {
    /// A value it has not yielded yet, with its version.
    Value(u64, Arc<T>),
    /// Nothing new, and the subject is open.
    Unchanged,
    /// Nothing new, and the subject is closed.
    Closed,
}

/// A [`Stream`] of a subject's latest value, returned by
/// [`Subject::stream`](crate::Subject::stream).
///
/// - Its first item is the subject's last value, if there is one.
/// - After that, whenever a value was recorded since the previous item, the next item is the
///   *latest* value: intermediate values may be skipped, the latest one is never missed. Items
///   follow the subject's total order.
/// - The publisher never waits for it and nothing is buffered: the stream holds no queue, only
///   the number of the value it saw last. Each item is one clone of the value.
/// - It ends (`None`, and stays ended) when every [`Subject`](crate::Subject) handle is gone,
///   after yielding the value it had not seen.
///
/// It is independent of the listeners: a stream is not a listener and does not keep any alive.
///
/// # Examples
///
/// ```
/// use futures::executor::block_on;
/// use futures::StreamExt;
///
/// let subject = keyrunner_subject::Subject::new();
/// let stream = subject.stream();
/// let publisher = std::thread::spawn(move || {
///     for value in 1..=100 {
///         subject.next(value);
///     }
/// });
/// let seen: Vec<u32> = block_on(stream.collect());
/// publisher.join().unwrap();
/// assert_eq!(seen.last(), Some(&100));
/// assert!(seen.windows(2).all(|pair| pair[0] < pair[1]));
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct SubjectStream<T> {
    inner: Arc<Inner<T>>,
    /// Version of the last item yielded; 0 before the first.
    seen: u64,
    /// Registered on the subject's `changed` event while the stream waits.
    listener: Option<EventListener>,
    terminated: bool,
}

impl<T> SubjectStream<T> {
    pub(crate) fn new(inner: Arc<Inner<T>>) -> Self {
        Self {
            inner,
            seen: 0,
            listener: None,
            terminated: false,
        }
    }

    fn latest(&self) -> Latest<T> {
        let state = self.inner.lock();
        match &state.last {
            Some(value) if state.version != self.seen => {
                Latest::Value(state.version, Arc::clone(value))
            }
            _ if state.closed => Latest::Closed,
            _ => Latest::Unchanged,
        }
    }

    fn park(&mut self) {
        if self.listener.is_none() {
            // Counted before registering and before the re-check, so a publisher that records
            // a value after the re-check sees the count and notifies.
            self.inner.parked_streams.fetch_add(1, Ordering::AcqRel);
            self.listener = Some(self.inner.changed.listen());
        }
    }

    fn unpark(&mut self) {
        if self.listener.take().is_some() {
            self.inner.parked_streams.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<T: Clone> Stream for SubjectStream<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        loop {
            if this.terminated {
                return Poll::Ready(None);
            }
            match this.latest() {
                Latest::Value(version, value) => {
                    this.unpark();
                    this.seen = version;
                    return Poll::Ready(Some(T::clone(&value)));
                }
                Latest::Closed => {
                    this.unpark();
                    this.terminated = true;
                    return Poll::Ready(None);
                }
                Latest::Unchanged => {}
            }
            match this.listener.as_mut() {
                // Register, then look again before sleeping.
                None => this.park(),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.unpark(),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl<T: Clone> FusedStream for SubjectStream<T> {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl<T> Drop for SubjectStream<T> {
    fn drop(&mut self) {
        self.unpark();
    }
}

impl<T> fmt::Debug for SubjectStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectStream")
            .field("seen", &self.seen)
            .field("waiting", &self.listener.is_some())
            .field("terminated", &self.terminated)
            .finish_non_exhaustive()
    }
}
