//! What a task's stream yields: snapshots of its progress, or [`Delta`]s folded into it.

use std::sync::Arc;

/// A delta of a task's progress: the repository folds it into the progress so far with
/// [`Accumulate::accumulate`], instead of replacing it.
///
/// A task whose stream yields `Delta<P>` (or `Result<Delta<P>, E>`) streams its progress in
/// pieces — a reply token by token — and every watcher gets every piece, in order, without the
/// whole value being sent again each time (see [`Event::Delta`](crate::Event::Delta)). The
/// repository still knows the whole value: [`state`](crate::Observer::state) and a late
/// watcher's first event carry the accumulated progress.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::stream;
/// use keyrunner_task_runner_repository::{Delta, Outcome, TaskRunnerRepository, spawn_fn};
///
/// let replies: TaskRunnerRepository<&str, String> = TaskRunnerRepository::new(spawn_fn(|driver| {
///     std::thread::spawn(move || futures::executor::block_on(driver));
/// }));
/// let _keep = replies.listen("chat", |_| {}, false); // keep the finished reply remembered
/// let handle = replies
///     .run("chat", |_| stream::iter(["Hel", "lo"].map(|token| Delta(token.to_owned()))))
///     .unwrap();
/// assert_eq!(handle.await, Outcome::Completed);
/// assert_eq!(replies.state(&"chat").progress().map(String::as_str), Some("Hello"));
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Delta<P>(pub P);

/// Progress that can be built from deltas: `accumulate` folds one delta into the value so far.
///
/// Implemented for `String` (appends) and `Vec<T>` (extends). For your own type, a delta is a
/// value of the same type holding only what changed:
///
/// ```
/// use keyrunner_task_runner_repository::Accumulate;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Reply {
///     text: String,
///     tokens: usize,
/// }
///
/// impl Accumulate for Reply {
///     fn accumulate(&mut self, delta: &Self) {
///         self.text.push_str(&delta.text);
///         self.tokens += delta.tokens;
///     }
/// }
///
/// let mut reply = Reply { text: "Hel".into(), tokens: 1 };
/// reply.accumulate(&Reply { text: "lo".into(), tokens: 1 });
/// assert_eq!(reply, Reply { text: "Hello".into(), tokens: 2 });
/// ```
///
/// The repository calls `accumulate` (and `clone`, to start from the last snapshot) outside any
/// lock of its own, whenever someone reads the accumulated progress. A panic in either while the
/// repository folds for the run itself (past [`max_deltas`](crate::Builder::max_deltas), and once
/// more at the run's end) is caught like a panic of the task: the final progress is `None`, and a
/// run that would have completed ends as [`Outcome::Panicked`](crate::Outcome::Panicked). A fold
/// made for a reader while the run goes on (`state`, a late joiner, a stream's resync) panics in
/// that reader. Once a run has ended, its progress is never folded again.
pub trait Accumulate: Clone + Send + Sync + 'static {
    /// Folds `delta` into `self`.
    fn accumulate(&mut self, delta: &Self);
}

impl Accumulate for String {
    fn accumulate(&mut self, delta: &Self) {
        self.push_str(delta);
    }
}

impl<T: Clone + Send + Sync + 'static> Accumulate for Vec<T> {
    fn accumulate(&mut self, delta: &Self) {
        self.extend_from_slice(delta);
    }
}

/// Folds `deltas` (at least `first`) into `base`, or into `first` when there is no base.
pub(crate) type Fold<P> = fn(Option<&P>, &P, &[Arc<P>]) -> P;

fn fold<P: Accumulate>(base: Option<&P>, first: &P, rest: &[Arc<P>]) -> P {
    let mut value = match base {
        Some(base) => {
            let mut value = base.clone();
            value.accumulate(first);
            value
        }
        None => first.clone(),
    };
    for delta in rest {
        value.accumulate(delta);
    }
    value
}

/// One item of a task, as the repository applies it.
#[derive(Debug)]
pub enum Update<P> {
    /// Replaces the progress.
    Snapshot(P),
    /// Is folded into the progress with the given function.
    Delta(P, Fold<P>),
}

/// Markers that let a task's stream yield plain or fallible snapshots or deltas.
///
/// You never name these: the compiler picks the one that fits the stream's item type.
pub mod progress {
    /// The stream yields `P`: snapshots, and it cannot fail.
    #[derive(Debug)]
    pub struct Plain(());
    /// The stream yields `Result<P, E>`: snapshots, and an `Err` ends the run as
    /// [`Outcome::Failed`](crate::Outcome::Failed).
    #[derive(Debug)]
    pub struct Fallible(());
    /// The stream yields [`Delta<P>`](crate::Delta): deltas, and it cannot fail.
    #[derive(Debug)]
    pub struct PlainDelta(());
    /// The stream yields `Result<Delta<P>, E>`: deltas, and an `Err` ends the run as
    /// [`Outcome::Failed`](crate::Outcome::Failed).
    #[derive(Debug)]
    pub struct FallibleDelta(());
}

/// An item of a task's stream: a snapshot `P`, a [`Delta<P>`], or either in a `Result<_, E>`.
///
/// The marker `M` (one of [`progress`]'s) is inferred, so all four kinds of stream work with no
/// wrapper of your own.
pub trait IntoProgress<P, E, M>: sealed::Sealed<P, E, M> {}

impl<P, E> IntoProgress<P, E, progress::Plain> for P {}
impl<P, E> IntoProgress<P, E, progress::Fallible> for Result<P, E> {}
impl<P: Accumulate, E> IntoProgress<P, E, progress::PlainDelta> for Delta<P> {}
impl<P: Accumulate, E> IntoProgress<P, E, progress::FallibleDelta> for Result<Delta<P>, E> {}

pub(crate) mod sealed {
    use super::{Accumulate, Delta, Update, fold, progress};

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
            Ok(Update::Delta(self.0, fold::<P>))
        }
    }

    impl<P: Accumulate, E> Sealed<P, E, progress::FallibleDelta> for Result<Delta<P>, E> {
        fn into_update(self) -> Result<Update<P>, E> {
            self.map(|delta| Update::Delta(delta.0, fold::<P>))
        }
    }
}
