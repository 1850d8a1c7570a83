//! Helpers shared by this crate's tests: a watchdog for liveness claims and a panic's message.
#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses only part of it"
)]

use std::any::Any;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long a call may take before a liveness test calls it a hang. Generous: the machines
/// that run the tests are shared, and a correct call returns in microseconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread and returns its result; fails (instead of hanging) if it does not
/// finish within [`DEADLINE`]. A panic in `f` is resumed here. The assertion behind "does not
/// deadlock": it never sleeps, it only bounds the wait.
pub(crate) fn within_deadline<R: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(DEADLINE) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the worker sends its result before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {DEADLINE:?}, a deadlock")
        }
    }
}

/// The message of a panic payload (`&str` or `String`).
pub(crate) fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic>")
}

/// A listener that records every value it receives, and the log it records into.
pub(crate) fn recorder<V: Clone + Send + Sync + 'static>() -> (
    std::sync::Arc<std::sync::Mutex<Vec<V>>>,
    impl Fn(&V) + Send + Sync,
) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&log);
    let listener = move |value: &V| push(&sink, value.clone());
    (log, listener)
}

/// Appends `value` to `log`.
pub(crate) fn push<V>(log: &std::sync::Mutex<Vec<V>>, value: V) {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(value);
}

/// What `log` holds now.
pub(crate) fn seen<V: Clone>(log: &std::sync::Mutex<Vec<V>>) -> Vec<V> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}
