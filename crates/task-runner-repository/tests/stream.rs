//! `stream(key)` and `stream_after`: the current state first, then every event in order; each
//! stream reads deltas with its own cursor; streams end after a shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{CountingWaker, Manual, ended, idle, running, state_of};
use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::stream::{self, StreamExt};
use futures::{FutureExt, Stream};
use keyrunner_task_runner_repository::{
    Delta, Event, EventStream, NoError, Outcome, Position, Reason, State, TaskRunnerRepository,
};

type Snapshots = TaskRunnerRepository<u32, u32>;
type Replies = TaskRunnerRepository<u32, String>;

/// Everything the stream has ready now.
fn drain<P, E>(events: &mut EventStream<P, E>) -> Vec<Event<P, E>> {
    let mut out = Vec::new();
    while let Some(Some(event)) = events.next().now_or_never() {
        out.push(event);
    }
    out
}

/// A reply streamed as one delta per token, driven by the test through a channel.
fn tokens(rx: mpsc::UnboundedReceiver<String>) -> impl Stream<Item = Delta<String>> + Send {
    rx.map(Delta)
}

/// What a client that folds events into its own copy of the reply ends up with.
#[derive(Debug, Default)]
struct Client {
    reply: String,
    /// Bytes of progress received: deltas plus resyncs.
    bytes: usize,
    resyncs: usize,
    deltas: usize,
}

impl Client {
    fn apply(&mut self, event: &Event<String>) {
        match event {
            Event::State { state, .. } => {
                if let Some(progress) = state.progress() {
                    self.bytes += progress.len();
                    if state.is_running() {
                        self.resyncs += 1;
                    }
                    self.reply.clone_from(progress);
                } else {
                    self.reply.clear();
                }
            }
            Event::Delta { delta, .. } => {
                self.bytes += delta.len();
                self.deltas += 1;
                self.reply.push_str(delta);
            }
        }
    }
}

#[test]
fn a_fast_consumer_sees_every_snapshot() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Snapshots = manual.repository();
    let mut events = repo.stream(1);
    let (tx, rx) = mpsc::unbounded();
    let handle = repo.run(1, move |_| rx).unwrap();
    let run = handle.run_id();
    let mut seen = drain(&mut events);
    for item in 1..=3 {
        tx.unbounded_send(item).unwrap();
        manual.drive(&mut pool);
        seen.extend(drain(&mut events));
    }
    drop(tx);
    manual.drive(&mut pool);
    seen.extend(drain(&mut events));
    let positions: Vec<String> = seen.iter().map(|e| e.position().to_string()).collect();
    assert_eq!(positions, ["0.0", "1.0", "1.1", "1.2", "1.3", "1.4"]);
    assert_eq!(
        seen.into_iter().map(state_of).collect::<Vec<_>>(),
        [
            idle(None),
            running(run, None),
            running(run, Some(1)),
            running(run, Some(2)),
            running(run, Some(3)),
            ended(Outcome::Completed, Some(3)),
        ]
    );
}

#[test]
fn a_slow_consumer_gets_the_latest_snapshot_and_every_start_and_end() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Snapshots = manual.repository();
    let mut events = repo.stream(1);
    let run = repo.run(1, |_| stream::iter(1..=100)).unwrap().run_id();
    manual.drive(&mut pool);
    assert_eq!(
        drain(&mut events)
            .into_iter()
            .map(state_of)
            .collect::<Vec<_>>(),
        [
            idle(None),
            running(run, None),
            running(run, Some(100)),
            ended(Outcome::Completed, Some(100)),
        ]
    );
}

#[test]
fn a_slow_consumer_gets_every_delta_in_order() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Replies = manual.repository();
    let mut events = repo.stream(1);
    let words: Vec<String> = (0..1_000).map(|i| format!("w{i} ")).collect();
    let reply: String = words.concat();
    let items = words.clone();
    repo.run(1, move |_| stream::iter(items).map(Delta))
        .unwrap()
        .detach();
    manual.drive(&mut pool);

    let mut client = Client::default();
    let seen = drain(&mut events);
    for event in &seen {
        client.apply(event);
    }
    assert_eq!(client.deltas, 1_000, "every delta, none merged");
    assert_eq!(
        client.resyncs, 0,
        "1,000 deltas are within the default bound"
    );
    assert_eq!(client.reply, reply);
    assert!(
        seen.windows(2)
            .all(|pair| pair[0].position() < pair[1].position()),
        "in order"
    );
}

#[test]
fn a_consumer_further_behind_than_the_bound_gets_one_resync_then_the_later_deltas() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Replies = TaskRunnerRepository::builder(manual.spawner())
        .max_deltas(8)
        .build();
    let mut events = repo.stream(1);
    let (tx, rx) = mpsc::unbounded();
    repo.run(1, move |_| tokens(rx)).unwrap().detach();
    manual.drive(&mut pool);
    let mut client = Client::default();
    for event in drain(&mut events) {
        client.apply(&event);
    }
    // 20 tokens while the consumer sleeps: more than the bound of 8.
    for i in 0..20 {
        tx.unbounded_send(format!("{i},")).unwrap();
    }
    manual.drive(&mut pool);
    let behind = drain(&mut events);
    for event in &behind {
        client.apply(event);
    }
    assert_eq!(client.resyncs, 1, "one resync: {behind:?}");
    assert!(
        matches!(behind[0], Event::State { .. }),
        "the resync comes first"
    );
    // Then it keeps up: every later delta, one by one.
    for i in 20..25 {
        tx.unbounded_send(format!("{i},")).unwrap();
        manual.drive(&mut pool);
        let caught_up = drain(&mut events);
        assert_eq!(caught_up.len(), 1);
        assert_eq!(
            caught_up[0].delta().map(String::as_str),
            Some(&*format!("{i},"))
        );
        client.apply(&caught_up[0]);
    }
    let expected: String = (0..25).map(|i| format!("{i},")).collect();
    assert_eq!(client.reply, expected);
    assert_eq!(repo.state(&1).progress(), Some(&expected));
}

#[test]
fn bytes_delivered_to_a_watcher_stay_linear_in_the_reply() {
    // 2,000 tokens of 5 bytes; a watcher that reads after every 7 tokens, with the default
    // bound, gets each byte once: the reply, not the reply once per token.
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Replies = manual.repository();
    let mut events = repo.stream(1);
    let (tx, rx) = mpsc::unbounded();
    repo.run(1, move |_| tokens(rx)).unwrap().detach();
    let mut client = Client::default();
    let mut reply = String::new();
    for i in 0..2_000 {
        let token = format!("{:04} ", i % 10_000);
        reply.push_str(&token);
        tx.unbounded_send(token).unwrap();
        if i % 7 == 0 {
            manual.drive(&mut pool);
            for event in drain(&mut events) {
                client.apply(&event);
            }
        }
    }
    drop(tx);
    manual.drive(&mut pool);
    for event in drain(&mut events) {
        client.apply(&event);
    }
    assert_eq!(client.reply, reply);
    // The deltas once, plus the final state's copy of the whole reply.
    assert_eq!(client.bytes, 2 * reply.len(), "{client:?}");
}

#[test]
fn a_late_joiner_gets_the_accumulated_reply_then_the_later_deltas() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Replies = manual.repository();
    let (tx, rx) = mpsc::unbounded();
    let run = repo.run(1, move |_| tokens(rx)).unwrap().run_id();
    for token in ["Hel", "lo", ", "] {
        tx.unbounded_send(token.to_owned()).unwrap();
    }
    manual.drive(&mut pool);

    let mut late = repo.stream(1);
    let first = drain(&mut late);
    assert_eq!(
        first,
        [Event::State {
            position: Position::new(Some(run), 3),
            state: running(run, Some("Hello, ".to_owned())),
        }]
    );
    tx.unbounded_send("world".to_owned()).unwrap();
    manual.drive(&mut pool);
    assert_eq!(
        drain(&mut late),
        [Event::Delta {
            position: Position::new(Some(run), 4),
            delta: Arc::new("world".to_owned()),
        }]
    );
    // A listener with `immediate` gets the same: the accumulated state, then deltas.
    let (log, listener) = common::events();
    let _listening = repo.listen(1, listener, true);
    tx.unbounded_send("!".to_owned()).unwrap();
    manual.drive(&mut pool);
    let heard = log.take();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert_eq!(
        heard[0]
            .state()
            .and_then(State::progress)
            .map(String::as_str),
        Some("Hello, world")
    );
    assert_eq!(heard[1].delta().map(String::as_str), Some("!"));
}

#[test]
fn a_stream_resumes_after_a_position_with_no_duplicate_and_no_gap() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Replies = manual.repository();
    let (tx, rx) = mpsc::unbounded();
    let run = repo.run(1, move |_| tokens(rx)).unwrap().run_id();
    let mut first = repo.stream(1);
    for token in ["a", "b", "c", "d"] {
        tx.unbounded_send(token.to_owned()).unwrap();
    }
    manual.drive(&mut pool);
    let seen = drain(&mut first);
    // The consumer saw the start and two deltas, then lost its connection.
    let last_seen = seen[2].position();
    assert_eq!(last_seen, Position::new(Some(run), 2));
    drop(first);

    let mut resumed = repo.stream_after(1, last_seen);
    let events = drain(&mut resumed);
    let deltas: Vec<&str> = events
        .iter()
        .map(|event| event.delta().map(String::as_str).unwrap())
        .collect();
    assert_eq!(deltas, ["c", "d"], "exactly the deltas after the position");

    // At the current position: nothing to replay.
    let current = events.last().unwrap().position();
    let mut up_to_date = repo.stream_after(1, current);
    assert!(drain(&mut up_to_date).is_empty());
    tx.unbounded_send("e".to_owned()).unwrap();
    manual.drive(&mut pool);
    assert_eq!(
        drain(&mut up_to_date)[0].delta().map(String::as_str),
        Some("e")
    );

    // A position from another run (or another process): one resync with the whole reply.
    let mut stranger = repo.stream_after(1, Position::new(Some(run.next()), 9));
    let events = drain(&mut stranger);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]
            .state()
            .and_then(State::progress)
            .map(String::as_str),
        Some("abcde")
    );
}

trait Next {
    fn next(self) -> Self;
}

impl Next for keyrunner_task_runner_repository::RunId {
    fn next(self) -> Self {
        Self::new(self.get() + 100)
    }
}

#[test]
fn a_stream_that_is_never_polled_holds_a_bounded_queue() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Snapshots = manual.repository();
    let mut events = repo.stream(1);
    for _ in 0..200 {
        repo.run(1, |_| stream::iter([1, 2, 3])).unwrap().detach();
        manual.drive(&mut pool);
    }
    let seen = drain(&mut events);
    assert!(seen.len() <= 64, "{} events queued", seen.len());
    assert_eq!(
        seen.last().cloned().map(state_of),
        Some(ended(Outcome::Completed, Some(3))),
        "the newest events are kept"
    );
}

#[test]
fn the_stream_keeps_the_key_remembered_until_dropped() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Snapshots = manual.repository();
    let events = repo.stream(1);
    repo.run(1, |_| stream::iter([1])).unwrap().detach();
    manual.drive(&mut pool);
    assert_eq!(repo.len(), 1);
    drop(events);
    assert!(repo.is_empty());
}

#[test]
fn a_pending_stream_is_woken_by_the_next_event() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Snapshots = manual.repository();
    let mut events = repo.stream(1);
    assert!(events.next().now_or_never().is_some(), "the current state");
    let (counter, waker) = CountingWaker::new();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(events.poll_next_unpin(&mut cx).is_pending());
    repo.run(1, |_| stream::iter([1])).unwrap().detach();
    assert!(counter.count() >= 1, "the start woke the stream");
    manual.drive(&mut pool);
    assert!(events.poll_next_unpin(&mut cx).is_ready());
}

// ---- Streams end after a shutdown ------------------------------------------------------------

#[test]
fn every_stream_gets_its_keys_final_state_then_ends_after_a_shutdown() {
    const KEYS: u32 = 1_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let repo: Snapshots = TaskRunnerRepository::new(keyrunner_spawner());
        let mut watchers = Vec::new();
        for key in 0..KEYS {
            repo.run(key, |_| stream::iter([1]).chain(stream::pending()))
                .unwrap()
                .detach();
            let mut events = repo.stream(key);
            watchers.push(tokio::spawn(async move {
                let mut last = None;
                while let Some(event) = events.next().await {
                    last = Some(event);
                }
                (last, events.next().await.is_none())
            }));
        }
        tokio::task::yield_now().await;
        repo.shutdown(Reason::from("bye")).await;
        for (key, watcher) in watchers.into_iter().enumerate() {
            let (last, fused) = tokio::time::timeout(std::time::Duration::from_secs(10), watcher)
                .await
                .expect("a stream never ended")
                .unwrap();
            let last = last.map(state_of).unwrap();
            assert_eq!(
                last.last_outcome(),
                Some(&Outcome::Stopped {
                    reason: Some(Reason::from("bye"))
                }),
                "key {key} ended on {last:?}"
            );
            assert!(fused, "a finished stream stays finished");
        }
        // A stream opened after the shutdown yields the key's state, then ends.
        let mut late = repo.stream(0);
        let first = late.next().await.unwrap();
        assert!(first.state().unwrap().is_idle());
        assert_eq!(late.next().await, None);
    });
}

/// A spawner on the current tokio runtime, through `spawn_fn`.
fn keyrunner_spawner() -> impl keyrunner_task_runner_repository::Spawn {
    let handle = tokio::runtime::Handle::current();
    keyrunner_task_runner_repository::spawn_fn(move |driver| drop(handle.spawn(driver)))
}

#[test]
fn dropping_the_last_handle_shuts_down_and_ends_the_streams() {
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let repo: Snapshots = manual.repository();
    let observer = repo.observer();
    let handle = repo.run(1, |_| stream::pending::<u32>()).unwrap();
    let mut events = observer.stream(1);
    let began = observer.shutdown_signal();
    drop(repo);
    assert!(!began.is_aborted(), "the observer is still a handle");
    drop(observer);
    assert!(
        began.is_aborted(),
        "the last handle shut the repository down"
    );
    manual.drive(&mut pool);
    assert_eq!(handle.outcome(), Some(Outcome::Stopped { reason: None }));
    let seen = drain(&mut events);
    assert!(seen.last().unwrap().state().unwrap().is_idle());
    assert_eq!(events.next().now_or_never(), Some(None), "the stream ended");
}

#[test]
fn the_shutdown_signal_fires_once_every_run_is_asked_to_stop() {
    let manual = Manual::default();
    let repo: Snapshots = manual.repository();
    let handle = repo.run(1, |_| stream::pending::<u32>()).unwrap();
    let began = repo.shutdown_signal();
    let mut waiting = began.aborted();
    assert!(!common::poll_once(&mut waiting));
    let stopped_first = handle.abort_signal();
    began
        .on_abort(move |reason| {
            assert!(stopped_first.is_aborted(), "runs are stopped first");
            assert_eq!(reason.map(Reason::as_str), Some("deploy"));
        })
        .detach();
    drop(repo.shutdown(Reason::from("deploy")));
    assert!(common::poll_once(&mut waiting));
    assert!(repo.is_shut_down());
    assert!(
        repo.run(2, |_| stream::pending::<u32>())
            .unwrap_err()
            .is_shut_down()
    );
}

#[test]
fn runs_are_refused_from_the_moment_shutdown_begins() {
    let manual = Manual::default();
    let repo: TaskRunnerRepository<u32, u32, NoError> = manual.repository();
    repo.run(1, |_| stream::pending::<u32>()).unwrap().detach();
    let inside = repo.clone();
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::clone(&refused);
    // A listener of the stop that shutdown makes tries to run another key: shutdown has begun.
    let _listener = repo.listen(
        1,
        move |event: &Event<u32>| {
            if event.state().is_some_and(State::is_idle) {
                let result = inside.run(2, |_| stream::pending::<u32>());
                seen.store(
                    result.is_err_and(|error| error.is_shut_down()),
                    std::sync::atomic::Ordering::SeqCst,
                );
            }
        },
        false,
    );
    drop(repo.shutdown(None));
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst));
}

/// Many runs stream deltas on a multi-threaded runtime while several watchers per key read at
/// their own uneven pace, some falling past a small bound: every watcher's own copy of each
/// reply, built from its events alone, equals the reply the key ends with, and no watcher ever
/// sees a position go backwards.
#[test]
fn watchers_at_uneven_paces_rebuild_every_reply_exactly() {
    const KEYS: u32 = 64;
    const TOKENS: u32 = 200;
    const WATCHERS: u32 = 3;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let repo: Replies = TaskRunnerRepository::builder(keyrunner_spawner())
            .max_deltas(16)
            .build();
        let mut watchers = Vec::new();
        for key in 0..KEYS {
            for watcher in 0..WATCHERS {
                let mut events = repo.stream(key);
                watchers.push(tokio::spawn(async move {
                    let mut client = Client::default();
                    let mut last = None;
                    let mut pace = u64::from(key * 7 + watcher * 13);
                    loop {
                        let Some(event) = events.next().await else {
                            panic!("key {key}: the stream ended before the run did");
                        };
                        let position = event.position();
                        assert!(
                            last.is_none_or(|last| position > last),
                            "key {key}: {position} after {last:?}"
                        );
                        last = Some(position);
                        if let Some(outcome) = event.state().and_then(State::last_outcome) {
                            // The end carries the whole reply: compare it with what the
                            // watcher built before it.
                            assert_eq!(*outcome, Outcome::Completed);
                            let reply = event.state().and_then(State::progress).cloned();
                            return (key, client.reply, reply, client.resyncs);
                        }
                        client.apply(&event);
                        // An uneven pace: yield 0 to 3 times between events.
                        pace = pace.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        for _ in 0..(pace >> 62) {
                            tokio::task::yield_now().await;
                        }
                    }
                }));
            }
        }
        for key in 0..KEYS {
            repo.run(key, move |_| {
                stream::iter(0..TOKENS).then(move |i| async move {
                    if i % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                    Delta(format!("{key}:{i} "))
                })
            })
            .unwrap()
            .detach();
        }
        let mut resyncs = 0;
        for watcher in watchers {
            let (key, rebuilt, reply, resynced) =
                tokio::time::timeout(std::time::Duration::from_secs(30), watcher)
                    .await
                    .expect("a watcher never saw its run end")
                    .unwrap();
            let expected: String = (0..TOKENS).map(|i| format!("{key}:{i} ")).collect();
            assert_eq!(
                reply.as_deref(),
                Some(expected.as_str()),
                "key {key}: the final reply"
            );
            assert_eq!(rebuilt, expected, "key {key}: a watcher's own copy");
            resyncs += resynced;
        }
        // Not asserted (it depends on the scheduler), but worth seeing when it is zero.
        println!("resyncs over {} watchers: {resyncs}", KEYS * WATCHERS);
    });
}
