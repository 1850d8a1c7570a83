//! [`TaskContext`]: what a task is given on a cluster.

use std::fmt;

use keyrunner_task_runner_repository::{AbortSignal, RunId};

/// What a task is given: its key, its run id (the run's **fence**), and the signal asking it to
/// stop.
///
/// The fence is the number Redis issued when the run started: it strictly increases per key,
/// cluster-wide. Pass it along with your own downstream writes and have the store refuse a write
/// whose fence is lower than one it has seen, and a zombie owner (a replica that was paused past
/// its lease while another replica took the key over) can change nothing there either.
///
/// ```
/// use keyrunner_redis::TaskContext;
///
/// fn fence_of(cx: &TaskContext<String>) -> u64 {
///     cx.run_id().get()
/// }
/// # let _ = fence_of;
/// ```
pub struct TaskContext<K> {
    key: K,
    run: RunId,
    signal: AbortSignal,
}

impl<K> TaskContext<K> {
    pub(crate) fn new(key: K, run: RunId, signal: AbortSignal) -> Self {
        Self { key, run, signal }
    }

    /// The key this run belongs to.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// This run's id: its fence (see the type's docs).
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// The signal fired when this run is asked to stop: by a stop on any replica, a
    /// replacement, a shutdown, or this replica losing its lease.
    #[must_use]
    pub fn abort_signal(&self) -> &AbortSignal {
        &self.signal
    }

    /// Takes the key, the run id and the signal apart.
    #[must_use]
    pub fn into_parts(self) -> (K, RunId, AbortSignal) {
        (self.key, self.run, self.signal)
    }
}

impl<K: fmt::Debug> fmt::Debug for TaskContext<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("key", &self.key)
            .field("run", &self.run)
            .field("abort_signal", &self.signal)
            .finish()
    }
}
