//! The typestate nodes: [`StateNode`], [`IdleNode`] (can only run) and [`RunningNode`] (can
//! only stop), and the one way a run starts.

use std::fmt;
use std::sync::Arc;

use futures_core::Stream;

use crate::abort::AbortSignal;
use crate::bounds::{Error, Key, Value};
use crate::driver::Driving;
use crate::error::{RunError, StopError};
use crate::handle::RunHandle;
use crate::inner::{Begun, Refusal, Shared};
use crate::item::IntoProgress;
use crate::panics::Deferred;
use crate::run::ErasedRun;
use crate::spawn::Driver;
use crate::state::{NoError, Outcome, Reason, RunId};
use crate::task::TaskContext;
use crate::trace::RunSpan;

/// A key's state at one instant, as a capability to act: run an idle key, stop a running one.
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{StateNode, TaskRunnerRepository, spawn_fn};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(drop));
/// if let StateNode::Idle(idle) = repository.state_node(1) {
///     idle.stop(None); // there is nothing to stop on an idle node
/// }
/// ```
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{StateNode, TaskRunnerRepository, spawn_fn};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(drop));
/// if let StateNode::Running(running) = repository.state_node(1) {
///     running.run(|_| futures::stream::empty()); // a running key cannot start another task
/// }
/// ```
#[derive(Debug)]
pub enum StateNode<K, P, E = NoError> {
    /// The key was idle.
    Idle(IdleNode<K, P, E>),
    /// The key was running.
    Running(RunningNode<K, P, E>),
}

/// A key seen idle: [`run`](Self::run) starts a task if it still is.
///
/// `run` consumes the node, so a node acts at most once:
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{StateNode, TaskRunnerRepository, spawn_fn};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(drop));
/// if let StateNode::Idle(idle) = repository.state_node(1) {
///     let _first = idle.run(|_| futures::stream::empty());
///     let _second = idle.run(|_| futures::stream::empty()); // use of moved value
/// }
/// ```
pub struct IdleNode<K, P, E = NoError> {
    shared: Arc<dyn Shared<K, P, E>>,
    key: K,
    last: Option<Outcome<E>>,
}

/// A key seen running one particular run: [`stop`](Self::stop) stops that run, never a later one.
///
/// ```compile_fail
/// # use keyrunner_task_runner_repository::{StateNode, TaskRunnerRepository, spawn_fn};
/// # let repository: TaskRunnerRepository<u32, u32> = TaskRunnerRepository::new(spawn_fn(drop));
/// if let StateNode::Running(running) = repository.state_node(1) {
///     let _ = running.stop(None);
///     let _ = running.stop(None); // use of moved value
/// }
/// ```
pub struct RunningNode<K, P, E = NoError> {
    key: K,
    // The run acts through its own lease on the key: the node needs no repository handle.
    run: Arc<dyn ErasedRun<P, E>>,
}

impl<K, P, E> StateNode<K, P, E> {
    /// The node for `key` as `shared` holds it now.
    pub(crate) fn of(shared: &Arc<dyn Shared<K, P, E>>, key: K) -> Self {
        let slot = shared.last(&key);
        match slot.as_deref().and_then(|slot| slot.run.clone()) {
            Some(run) => Self::Running(RunningNode { key, run }),
            None => Self::Idle(IdleNode {
                shared: Arc::clone(shared),
                key,
                last: slot
                    .as_deref()
                    .and_then(|slot| slot.event.state())
                    .and_then(|state| state.last_outcome().cloned()),
            }),
        }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        match self {
            Self::Idle(node) => node.key(),
            Self::Running(node) => node.key(),
        }
    }

    /// Whether the key was idle.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self, Self::Idle(_))
    }

    /// Whether the key was running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running(_))
    }
}

impl<K: Key, P: Value, E: Value> IdleNode<K, P, E> {
    /// Starts `task` if the key is still idle at this instant.
    ///
    /// Of two racing runs on one key exactly one succeeds; the other gets [`RunError::Busy`]
    /// with its task back. The task is called on the executor with a [`TaskContext`]; its
    /// stream may yield snapshots `P`, deltas [`Delta<P>`](crate::Delta), or either in a
    /// `Result<_, E>`.
    pub fn run<F, St, M>(self, task: F) -> Result<RunHandle<E>, RunError<F>>
    where
        E: Error,
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<P, E, M>,
        M: 'static,
    {
        start(&self.shared, self.key, task, None)
    }

    /// Like [`run`](Self::run), and the run is also stopped (with the signal's reason) when
    /// `signal` fires — one controller can stop many runs. The link is one-way: the run's own
    /// end never fires `signal`, and it is removed from `signal` when the run ends.
    pub fn run_linked<F, St, M>(
        self,
        task: F,
        signal: &AbortSignal,
    ) -> Result<RunHandle<E>, RunError<F>>
    where
        E: Error,
        F: FnOnce(TaskContext<K>) -> St + Send + 'static,
        St: Stream + Send + 'static,
        St::Item: IntoProgress<P, E, M>,
        M: 'static,
    {
        start(&self.shared, self.key, task, Some(signal))
    }
}

impl<K, P, E> IdleNode<K, P, E> {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// How the key's last run ended, when the node was taken (if remembered).
    #[must_use]
    pub fn last_outcome(&self) -> Option<&Outcome<E>> {
        self.last.as_ref()
    }
}

impl<K, P, E> RunningNode<K, P, E> {
    /// Stops the run this node saw: the key is idle at once (keeping the run's progress), the
    /// run's signal fires (once), and the task's stream is dropped promptly on its executor. To
    /// wait for that drop, take a [`handle`](Self::handle) first and await it.
    ///
    /// If that run has already ended — even if a later run now holds the key — nothing changes
    /// and [`StopError::Ended`] is returned.
    ///
    /// # Panics
    ///
    /// A listener's or an abort callback's panic resumes from here, once the run is stopped.
    pub fn stop(self, reason: impl Into<Option<Reason>>) -> Result<(), StopError> {
        let mut panic = Deferred::default();
        let stopped = self.run.stop(reason.into(), &mut panic);
        panic.resume();
        if stopped {
            Ok(())
        } else {
            Err(StopError::Ended { run: self.run_id() })
        }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The run this node saw.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.run.core().id()
    }

    /// That run's progress now (its last snapshot with the deltas since folded in): what it
    /// was when it ended, if it has.
    #[must_use]
    pub fn progress(&self) -> Option<Arc<P>> {
        self.run.core().progress().1
    }

    /// A handle to the run this node saw.
    pub fn handle(&self) -> RunHandle<E> {
        Arc::clone(&self.run).handle()
    }
}

impl<K, P: Value, E: Value> RunningNode<K, P, E> {
    /// The signal of the run this node saw.
    #[must_use]
    pub fn abort_signal(&self) -> AbortSignal {
        self.run.core().signal()
    }
}

/// The one way a run starts: the start transition, then the link, then the driver.
pub(crate) fn start<K, P, E, F, St, M>(
    shared: &Arc<dyn Shared<K, P, E>>,
    key: K,
    task: F,
    link: Option<&AbortSignal>,
) -> Result<RunHandle<E>, RunError<F>>
where
    K: Key,
    P: Value,
    E: Error,
    F: FnOnce(TaskContext<K>) -> St + Send + 'static,
    St: Stream + Send + 'static,
    St::Item: IntoProgress<P, E, M>,
    M: 'static,
{
    // A listener's panic during the start is held until the driver is spawned: the key runs
    // now, and a running key needs its driver.
    let mut panic = Deferred::default();
    let Begun { run, core, live } = match shared.begin(key, &mut panic) {
        Ok(begun) => begun,
        Err(refusal) => {
            panic.resume();
            return Err(match refusal {
                Refusal::Busy(running) => RunError::Busy { task, running },
                Refusal::ShutDown => RunError::ShutDown { task },
            });
        }
    };
    let id = core.id();
    let span = RunSpan::start(|| run.key(), id);
    // A signal that has fired already runs the callback here, stopping the run before its
    // driver exists; a panic in that stop is held too.
    let link = link.and_then(|signal| {
        let weak = Arc::downgrade(&Arc::clone(&run).erased());
        panic.catch(|| {
            signal.on_abort(move |reason| {
                if let Some(run) = weak.upgrade() {
                    let mut panic = Deferred::default();
                    // Stale is fine: the run ended before the linked signal fired.
                    run.stop(reason.cloned(), &mut panic);
                    panic.resume();
                }
            })
        })
    });
    let handle = Arc::clone(&run).handle();
    let driving: Driving<K, P, E, F, St, M> =
        Driving::new(run, Arc::clone(&core), task, live, link, span);
    // Boxed before the closure, so that only the box moves into it.
    let driver = Driver::new(driving);
    panic.catch(|| shared.common().spawn(driver));
    let result = if core.was_refused() {
        Err(RunError::Spawn { run: id })
    } else {
        Ok(handle)
    };
    panic.resume();
    result
}

impl<K: fmt::Debug, P, E: fmt::Debug> fmt::Debug for IdleNode<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleNode")
            .field("key", &self.key)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Debug, P, E> fmt::Debug for RunningNode<K, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningNode")
            .field("key", &self.key)
            .field("run", &self.run.core().id())
            .finish_non_exhaustive()
    }
}
