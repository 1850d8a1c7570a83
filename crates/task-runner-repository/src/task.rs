//! What a task is given: [`TaskContext`].

use std::fmt;

use crate::abort::AbortSignal;
use crate::state::RunId;

/// What a task is given: the key it runs for, its run's id, and the signal asking it to stop.
///
/// The repository drops the task's stream promptly when the run is stopped, so most tasks never
/// need to look at the signal; it is there for work that outlives a poll (a request in flight, a
/// child process) and should be cancelled cooperatively. The run id can fence the task's own
/// writes elsewhere: a later run of the same key has a larger id.
///
/// ```
/// use keyrunner_task_runner_repository::{AbortController, RunId, TaskContext};
///
/// let controller = AbortController::new();
/// let cx = TaskContext::new("chat-1", RunId::new(3), controller.signal());
/// assert_eq!(*cx.key(), "chat-1");
/// assert_eq!(cx.run_id(), RunId::new(3));
/// assert!(!cx.abort_signal().is_aborted());
/// ```
pub struct TaskContext<K> {
    key: K,
    run: RunId,
    signal: AbortSignal,
}

impl<K> TaskContext<K> {
    /// A context for `key`'s run `run`, asked to stop by `signal`: for other backends and tests
    /// (the repository builds its tasks' contexts itself).
    #[must_use]
    pub fn new(key: K, run: RunId, signal: AbortSignal) -> Self {
        Self { key, run, signal }
    }

    /// The key this run belongs to.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The run's id.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run
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
            .field("key", &self.key)
            .field("run", &self.run)
            .field("abort_signal", &self.signal)
            .finish()
    }
}
