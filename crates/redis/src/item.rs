//! [`IntoProgress`]: what a task's stream may yield on a cluster, as in-process.

use keyrunner_task_runner_repository::{Accumulate, Delta, progress};

/// An item of a task's stream: a snapshot `P`, a [`Delta<P>`], or either in a `Result<_, E>`.
///
/// The same four shapes as in-process, with the same markers (`M`, one of
/// [`progress`]'s), inferred: you never name this trait in a task. Snapshots replace the
/// key's progress; deltas are folded into it with [`Accumulate`] by the owner, and every replica's
/// listeners receive each delta, in order.
pub trait IntoProgress<P, E, M>: sealed::Sealed<P, E, M> {}

impl<P, E> IntoProgress<P, E, progress::Plain> for P {}
impl<P, E> IntoProgress<P, E, progress::Fallible> for Result<P, E> {}
impl<P: Accumulate, E> IntoProgress<P, E, progress::PlainDelta> for Delta<P> {}
impl<P: Accumulate, E> IntoProgress<P, E, progress::FallibleDelta> for Result<Delta<P>, E> {}

/// One item, as the owner applies it.
pub(crate) enum Update<P> {
    Snapshot(P),
    /// A delta, and how to fold it into the accumulated progress.
    Delta(P, fn(&mut P, &P)),
}

// The trait is sealed: nothing outside this crate can name it, so its method returning a
// crate-private type is unreachable from outside.
#[allow(private_interfaces)]
pub(crate) mod sealed {
    use keyrunner_task_runner_repository::{Accumulate, Delta, progress};

    use super::Update;

    pub trait Sealed<P, E, M> {
        /// The item as an update of the progress, or the run's error.
        fn into_update(self) -> Result<Update<P>, E>;
    }

    impl<P, E> Sealed<P, E, progress::Plain> for P {
        fn into_update(self) -> Result<Update<P>, E> {
            Ok(Update::Snapshot(self))
        }
    }

    impl<P, E> Sealed<P, E, progress::Fallible> for Result<P, E> {
        fn into_update(self) -> Result<Update<P>, E> {
            self.map(Update::Snapshot)
        }
    }

    impl<P: Accumulate, E> Sealed<P, E, progress::PlainDelta> for Delta<P> {
        fn into_update(self) -> Result<Update<P>, E> {
            Ok(Update::Delta(self.0, P::accumulate))
        }
    }

    impl<P: Accumulate, E> Sealed<P, E, progress::FallibleDelta> for Result<Delta<P>, E> {
        fn into_update(self) -> Result<Update<P>, E> {
            self.map(|delta| Update::Delta(delta.0, P::accumulate))
        }
    }
}
