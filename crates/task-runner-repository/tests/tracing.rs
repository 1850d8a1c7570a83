//! The `tracing` feature: a span per run carrying its key and run id, and events for its
//! start, progress and end at the documented levels, captured by a subscriber of the test's own.
//!
//! Runs are driven on the test's thread (a hand-cranked spawner), where the capturing
//! subscriber is the default.
#![cfg(feature = "tracing")]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::executor::LocalPool;
use futures::{FutureExt as _, StreamExt as _, stream};
use keyrunner_task_runner_repository::{Delta, Outcome, Reason, TaskRunnerRepository};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use common::Manual;

/// The target of the repository's spans and events.
const TARGET: &str = "keyrunner_task_runner_repository";

/// A span as the capture saw it open.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpanRecord {
    name: &'static str,
    target: String,
    level: Level,
    fields: Fields,
    /// Its explicit or contextual parent's name, if any.
    parent: Option<&'static str>,
    /// The names of the spans it follows from.
    follows_from: Vec<&'static str>,
}

/// An event as the capture saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EventRecord {
    level: Level,
    target: String,
    message: String,
    fields: Fields,
    /// The span the event belongs to, with its fields, if any.
    span: Option<(&'static str, Fields)>,
}

type Fields = BTreeMap<String, String>;

/// Every field, as text: strings as they are, numbers in decimal, the rest with `Debug`.
#[derive(Default)]
struct Collect(Fields);

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A layer that keeps every span and event.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<(Id, SpanRecord)>>>,
    events: Arc<Mutex<Vec<EventRecord>>>,
}

impl Capture {
    fn spans(&self) -> Vec<SpanRecord> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(_, span)| span.clone()).collect()
    }

    /// The events of the repository's target.
    fn events(&self) -> Vec<EventRecord> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|event| event.target == TARGET)
            .cloned()
            .collect()
    }

    /// Every event, whatever its target.
    fn all_events(&self) -> Vec<EventRecord> {
        self.events.lock().unwrap().clone()
    }

    fn span_name<S>(ctx: &Context<'_, S>, id: &Id) -> &'static str
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        ctx.span(id).expect("a live span").name()
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Collect::default();
        attributes.record(&mut fields);
        let span = ctx.span(id).expect("the new span");
        let parent = span.parent().map(|parent| parent.name());
        let record = SpanRecord {
            name: attributes.metadata().name(),
            target: attributes.metadata().target().to_owned(),
            level: *attributes.metadata().level(),
            fields: fields.0,
            parent,
            follows_from: Vec::new(),
        };
        self.spans.lock().unwrap().push((id.clone(), record));
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let follows = Self::span_name(&ctx, follows);
        let mut spans = self.spans.lock().unwrap();
        let (_, span) = spans
            .iter_mut()
            .find(|(span, _)| span == id)
            .expect("a captured span");
        span.follows_from.push(follows);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Collect::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let span = ctx.event_span(event).map(|span| {
            let spans = self.spans.lock().unwrap();
            let (_, record) = spans
                .iter()
                .find(|(id, _)| *id == span.id())
                .expect("a captured span");
            (span.name(), record.fields.clone())
        });
        self.events.lock().unwrap().push(EventRecord {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message,
            fields: fields.0,
            span,
        });
    }
}

/// A capture, the default subscriber of this thread until the guard drops.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = Registry::default().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

fn fields<const N: usize>(pairs: [(&str, &str); N]) -> Fields {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// The span fields of run `run` of key `"chat"`.
fn run_span(run: u64) -> Option<(&'static str, Fields)> {
    Some((
        "run",
        fields([("key", "\"chat\""), ("run", &run.to_string())]),
    ))
}

fn event(level: Level, message: &str, fields: Fields, run: u64) -> EventRecord {
    EventRecord {
        level,
        target: TARGET.to_owned(),
        message: message.to_owned(),
        fields,
        span: run_span(run),
    }
}

#[test]
fn a_run_has_a_span_with_its_key_and_id_and_events_for_its_start_progress_and_end() {
    let (capture, _guard) = capture();
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let replies: TaskRunnerRepository<String, String> = manual.repository();

    let mut handle = replies
        .run("chat".to_owned(), |_| {
            stream::iter(["Hel", "lo"].map(|token| Delta(token.to_owned())))
        })
        .unwrap();
    // The start is recorded when `run` returns, before the run is first polled.
    assert_eq!(
        capture.events(),
        [event(Level::INFO, "run started", Fields::new(), 1)]
    );
    manual.drive(&mut pool);
    assert_eq!((&mut handle).now_or_never(), Some(Outcome::Completed));

    assert_eq!(
        capture.spans(),
        [SpanRecord {
            name: "run",
            target: TARGET.to_owned(),
            level: Level::INFO,
            fields: fields([("key", "\"chat\""), ("run", "1")]),
            parent: None,
            follows_from: Vec::new(),
        }]
    );
    assert_eq!(
        capture.events(),
        [
            event(Level::INFO, "run started", Fields::new(), 1),
            event(Level::TRACE, "run progress", fields([("seq", "1")]), 1),
            event(Level::TRACE, "run progress", fields([("seq", "2")]), 1),
            event(
                Level::INFO,
                "run completed",
                fields([("outcome", "completed")]),
                1
            ),
        ]
    );
}

#[test]
fn a_stop_is_recorded_with_its_reason_once_the_stream_is_dropped() {
    let (capture, _guard) = capture();
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let replies: TaskRunnerRepository<String, String> = manual.repository();

    let _detached = replies
        .run("chat".to_owned(), |_| stream::pending::<String>())
        .unwrap();
    manual.drive(&mut pool);
    replies
        .stop(&"chat".to_owned(), Reason::from("user left"))
        .unwrap();
    // Stopped, but its stream is still there: its end is not recorded yet.
    assert_eq!(capture.events().len(), 1);
    manual.drive(&mut pool);

    let _detached = replies
        .run("chat".to_owned(), |_| stream::pending::<String>())
        .unwrap();
    replies.stop(&"chat".to_owned(), None).unwrap();
    manual.drive(&mut pool);

    assert_eq!(
        capture.events(),
        [
            event(Level::INFO, "run started", Fields::new(), 1),
            event(
                Level::INFO,
                "run stopped",
                fields([("outcome", "stopped"), ("reason", "user left")]),
                1
            ),
            event(Level::INFO, "run started", Fields::new(), 2),
            // No reason, no field.
            event(
                Level::INFO,
                "run stopped",
                fields([("outcome", "stopped")]),
                2
            ),
        ]
    );
}

#[test]
fn a_failure_is_a_warning_with_the_error() {
    let (capture, _guard) = capture();
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let replies: TaskRunnerRepository<String, String, String> = manual.repository();

    let _detached = replies
        .run("chat".to_owned(), |_| {
            stream::iter([Ok("Hel".to_owned()), Err("overloaded".to_owned())])
        })
        .unwrap();
    manual.drive(&mut pool);

    assert_eq!(
        capture.events().last(),
        Some(&event(
            Level::WARN,
            "run failed",
            fields([("outcome", "failed"), ("error", "\"overloaded\"")]),
            1
        ))
    );
}

#[test]
fn a_panic_is_an_error_with_its_message() {
    let (capture, _guard) = capture();
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let replies: TaskRunnerRepository<String, String> = manual.repository();

    let _detached = replies
        .run("chat".to_owned(), |_| {
            stream::iter([1, 2]).map(|n| -> String {
                assert!(n < 2, "boom");
                n.to_string()
            })
        })
        .unwrap();
    manual.drive(&mut pool);

    assert_eq!(
        capture.events()[2..],
        [event(
            Level::ERROR,
            "run panicked",
            fields([("outcome", "panicked"), ("panic", "boom")]),
            1
        )]
    );
}

#[test]
fn a_run_its_executor_drops_is_a_warning() {
    let (capture, _guard) = capture();
    let manual = Manual::default();
    let replies: TaskRunnerRepository<String, String> = manual.repository();

    let handle = replies
        .run("chat".to_owned(), |_| stream::pending::<String>())
        .unwrap();
    {
        let mut pool = LocalPool::new();
        manual.drive(&mut pool);
        // The pool (the "runtime") goes away with the driver still pending.
    }
    assert_eq!(handle.outcome(), Some(Outcome::Lost));

    assert_eq!(
        capture.events()[1..],
        [event(
            Level::WARN,
            "run lost: its executor dropped it before it ended",
            fields([("outcome", "lost")]),
            1
        )]
    );
}

#[test]
fn what_the_task_logs_belongs_to_its_run_which_follows_from_the_caller_without_being_its_child() {
    let (capture, _guard) = capture();
    let manual = Manual::default();
    let mut pool = LocalPool::new();
    let replies: TaskRunnerRepository<String, String> = manual.repository();

    let request = tracing::info_span!("request");
    let _detached = request.in_scope(|| {
        replies
            .run("chat".to_owned(), |cx| {
                tracing::info!(target: "agent", run = cx.run_id().get(), "thinking");
                stream::once(async {
                    tracing::info!(target: "agent", "answering");
                    "Hello".to_owned()
                })
            })
            .unwrap()
    });
    manual.drive(&mut pool);

    let spans = capture.spans();
    assert_eq!(spans[1].name, "run");
    // A run outlives the request that started it: not its child, but linked to it.
    assert_eq!(spans[1].parent, None);
    assert_eq!(spans[1].follows_from, ["request"]);
    let agent: Vec<_> = capture
        .all_events()
        .into_iter()
        .filter(|event| event.target == "agent")
        .map(|event| (event.message, event.span))
        .collect();
    assert_eq!(
        agent,
        [
            ("thinking".to_owned(), run_span(1)),
            ("answering".to_owned(), run_span(1)),
        ]
    );
}
