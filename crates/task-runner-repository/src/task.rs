//! What a task is: a function of a [`TaskContext`] returning a stream of progress.

use std::fmt;

use crate::abort::AbortSignal;

/// What a task is given: the key it runs for and the signal asking it to stop.
///
/// The repository drops the task's stream promptly when the run is stopped, so most tasks never
/// need to look at the signal; it is there for work that outlives a poll (a request in flight, a
/// child process) and should be cancelled cooperatively.
pub struct TaskContext<K> {
    key: K,
    signal: AbortSignal,
}

impl<K> TaskContext<K> {
    pub(crate) fn new(key: K, signal: AbortSignal) -> Self {
        Self { key, signal }
    }

    /// The key this run belongs to.
    #[must_use]
    pub fn job_key(&self) -> &K {
        &self.key
    }

    /// The signal fired when this run is asked to stop.
    #[must_use]
    pub fn abort_signal(&self) -> &AbortSignal {
        &self.signal
    }

    /// Takes the key and the signal apart.
    #[must_use]
    pub fn into_parts(self) -> (K, AbortSignal) {
        (self.key, self.signal)
    }
}

impl<K: fmt::Debug> fmt::Debug for TaskContext<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("job_key", &self.key)
            .field("abort_signal", &self.signal)
            .finish()
    }
}

/// Markers that let a task's stream yield either plain progress `S` or `Result<S, E>`.
///
/// You never name these: the compiler picks the one that fits the stream's item type.
pub mod progress {
    /// The stream yields `S`: it cannot fail.
    #[derive(Debug)]
    pub struct Plain(());
    /// The stream yields `Result<S, E>`: an `Err` ends the run as
    /// [`Outcome::Failed`](crate::Outcome::Failed).
    #[derive(Debug)]
    pub struct Fallible(());
}

/// An item of a task's stream: either plain progress `S` or `Result<S, E>`.
///
/// Implemented for `S` (with marker [`progress::Plain`]) and for `Result<S, E>` (with marker
/// [`progress::Fallible`]); the marker is inferred, so both kinds of stream work with no wrapper.
pub trait IntoProgress<S, E, M>: sealed::Sealed<S, E, M> {
    /// The item as progress or the run's error.
    fn into_progress(self) -> Result<S, E>;
}

impl<S, E> IntoProgress<S, E, progress::Plain> for S {
    fn into_progress(self) -> Result<S, E> {
        Ok(self)
    }
}

impl<S, E> IntoProgress<S, E, progress::Fallible> for Result<S, E> {
    fn into_progress(self) -> Result<S, E> {
        self
    }
}

mod sealed {
    pub trait Sealed<S, E, M> {}
    impl<S, E> Sealed<S, E, super::progress::Plain> for S {}
    impl<S, E> Sealed<S, E, super::progress::Fallible> for Result<S, E> {}
}
