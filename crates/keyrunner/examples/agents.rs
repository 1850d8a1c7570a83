//! Simulated streaming agents, one per conversation, with live progress in the terminal.
//!
//! Run it with `cargo run --example agents`. Five agents stream a canned reply word by word. On
//! the way, a second run on a busy conversation is refused, a late listener joins with a replay
//! of the current state, one agent fails, one is stopped by its user, and a summary of every
//! conversation's outcome closes the show. On a terminal, one line per agent is redrawn in
//! place; otherwise every transition and event is printed as a plain line.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use keyrunner::task_runner_repository::LastError;
use keyrunner::{
    Accumulate, Delta, Event, Outcome, Reason, RunError, RunHandle, State, StateNode, TaskContext,
    TaskRunnerRepository, spawn_fn,
};

/// The conversations, in display order.
const KEYS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

/// How many event lines the terminal view keeps under the agents.
const EVENT_LINES: usize = 9;

/// The widest line the terminal view draws, so no line wraps on an 80-column terminal.
const WIDTH: usize = 79;

/// An agent's reply. The agent streams it as deltas (one word each), which the repository folds
/// into the reply so far.
#[derive(Clone, Debug, Default)]
struct Reply {
    tokens: usize,
    total: usize,
    text: String,
}

impl Accumulate for Reply {
    fn accumulate(&mut self, delta: &Self) {
        if !self.text.is_empty() && !delta.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(&delta.text);
        self.tokens += delta.tokens;
        self.total = delta.total;
    }
}

/// Why an agent failed.
#[derive(Debug)]
struct AgentError(&'static str);

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for AgentError {}

/// One repository for the whole process: a conversation runs at most one agent at a time.
///
/// The spawner is a plain closure over `tokio::spawn`, made a spawner by `spawn_fn`.
static AGENTS: LazyLock<TaskRunnerRepository<&'static str, Reply, AgentError>> =
    LazyLock::new(|| {
        TaskRunnerRepository::new(spawn_fn(|driver| {
            drop(tokio::spawn(driver));
        }))
    });

/// When the demo started; every printed time is relative to it.
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Whether stdout is a terminal (live view) or not (plain lines).
static LIVE: LazyLock<bool> = LazyLock::new(|| std::io::stdout().is_terminal());

/// The events shown under the live view.
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The last reply seen per conversation, for the summary.
static LAST_REPLY: LazyLock<Mutex<HashMap<&'static str, Reply>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn elapsed() -> String {
    format!("{:6.2}s", START.elapsed().as_secs_f64())
}

/// Records a scripted event: printed at once as a plain line, or shown under the live view.
fn event(text: impl fmt::Display) {
    if *LIVE {
        EVENTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{} {text}", elapsed()));
    } else {
        println!("{} event: {text}", elapsed());
    }
}

/// A pseudo-random delay between 40 and 120 ms per token, the same on every run.
fn token_delay(key: &str, index: usize) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain(index.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    Duration::from_millis(40 + hash % 81)
}

/// An agent that streams `reply` word by word, one delta per word; with `fail_at`, its stream
/// yields an error instead of that word.
fn agent(
    reply: &'static str,
    fail_at: Option<usize>,
) -> impl FnOnce(TaskContext<&'static str>) -> BoxStream<'static, Result<Delta<Reply>, AgentError>>
+ Send
+ 'static {
    move |cx| {
        let key = *cx.key();
        let words = reply.split_whitespace();
        let total = words.clone().count();
        stream::unfold((words, 0), move |(mut words, sent)| async move {
            let word = words.next()?;
            tokio::time::sleep(token_delay(key, sent)).await;
            if fail_at == Some(sent) {
                return Some((Err(AgentError("model overloaded")), (words, sent)));
            }
            let delta = Reply {
                tokens: 1,
                total,
                text: word.to_owned(),
            };
            Some((Ok(Delta(delta)), (words, sent + 1)))
        })
        .boxed()
    }
}

fn describe_outcome(outcome: &Outcome<AgentError>) -> String {
    match outcome {
        Outcome::Completed => "completed".to_owned(),
        Outcome::Stopped {
            reason: Some(reason),
        } => format!("stopped: {reason}"),
        Outcome::Stopped { reason: None } => "stopped".to_owned(),
        Outcome::Failed { error } => format!("failed: {error}"),
        Outcome::Panicked { message } => {
            format!("panicked: {}", message.as_deref().unwrap_or("?"))
        }
        Outcome::Lost => "lost".to_owned(),
    }
}

fn describe_state(state: &State<Reply, AgentError>) -> String {
    match state {
        State::Idle { last: None, .. } => "idle".to_owned(),
        State::Idle {
            last: Some(outcome),
            ..
        } => format!("idle, {}", describe_outcome(outcome)),
        State::Running {
            run,
            progress: None,
        } => format!("running {run}, no token yet"),
        State::Running {
            run,
            progress: Some(reply),
        } => format!(
            "running {run}, {}/{} tokens, {:?}",
            reply.tokens,
            reply.total,
            tail(&reply.text, 40)
        ),
    }
}

/// The last `width` characters of `text`, with an ellipsis when cut.
fn tail(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().skip(count - width + 1).collect();
    format!("…{kept}")
}

/// The first `width` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().take(width - 1).collect();
    format!("{kept}…")
}

fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// One line of the live view for `key`, read from the repository's state.
fn agent_line(key: &'static str) -> String {
    let state = AGENTS.state(&key);
    let last = LAST_REPLY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        .cloned();
    let (tokens, total, text) = last.map_or((0, 0, String::new()), |reply| {
        (reply.tokens, reply.total, reply.text)
    });
    let (colour, status) = match &state {
        State::Running { .. } => ("\x1b[36m", "running".to_owned()),
        State::Idle { last: None, .. } => ("\x1b[2m", "waiting".to_owned()),
        State::Idle {
            last: Some(outcome),
            ..
        } => {
            let colour = match outcome {
                Outcome::Completed => "\x1b[32m",
                Outcome::Stopped { .. } => "\x1b[33m",
                _ => "\x1b[31m",
            };
            (colour, describe_outcome(outcome))
        }
    };
    format!(
        "  {key:<6} {} {tokens:>2}/{total:<2} {colour}{status:<25}\x1b[0m {}",
        bar(tokens, total, 16),
        tail(&text, 20)
    )
}

/// Draws the live view; after the first frame, redraws it in place.
fn render(first: bool) {
    let mut lines =
        vec!["\x1b[1mkeyrunner: streaming agents, one per conversation\x1b[0m".to_owned()];
    lines.extend(KEYS.map(agent_line));
    lines.push("\x1b[1mevents\x1b[0m".to_owned());
    {
        let events = EVENTS.lock().unwrap_or_else(PoisonError::into_inner);
        let shown = &events[events.len().saturating_sub(EVENT_LINES)..];
        lines.extend(shown.iter().map(|line| clip(&format!("  {line}"), WIDTH)));
        lines.extend((shown.len()..EVENT_LINES).map(|_| String::new()));
    }
    let mut frame = String::new();
    if !first {
        let _ = write!(frame, "\x1b[{}A", lines.len());
    }
    for line in &lines {
        let _ = writeln!(frame, "\x1b[2K{line}");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(frame.as_bytes());
    let _ = stdout.flush();
}

/// Waits until `key` has streamed at least `tokens` tokens; `false` if its run ended first.
async fn wait_for_tokens(key: &'static str, tokens: usize) -> bool {
    let mut events = AGENTS.stream(key);
    // The first event carries the reply so far; later ones add a word each.
    let mut reply = Reply::default();
    while let Some(event) = events.next().await {
        match event {
            Event::State { state, .. } => {
                if state.last_outcome().is_some() {
                    return false;
                }
                reply = state.progress().cloned().unwrap_or_default();
            }
            Event::Delta { delta, .. } => reply.accumulate(&delta),
        }
        if reply.tokens >= tokens {
            return true;
        }
    }
    false
}

fn start(key: &'static str, reply: &'static str, fail_at: Option<usize>) -> RunHandle<AgentError> {
    let handle = AGENTS
        .run(key, agent(reply, fail_at))
        .expect("every conversation is idle when the script starts it");
    event(format_args!("{key}: agent started as {}", handle.run_id()));
    handle
}

#[tokio::main]
async fn main() {
    LazyLock::force(&START);

    // Watch every conversation: remember its last reply, print transitions when not live.
    // Holding the subscriptions also keeps every conversation's last outcome remembered.
    let _watchers: Vec<_> = KEYS
        .map(|key| {
            AGENTS.listen(
                key,
                move |event: &Event<Reply, AgentError>| {
                    let mut replies = LAST_REPLY.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        // A run's start (no reply yet) or end (the whole reply).
                        Event::State { state, .. } => {
                            if let Some(reply) = state.progress() {
                                replies.insert(key, reply.clone());
                            } else if state.is_running() {
                                replies.insert(key, Reply::default());
                            }
                            if !*LIVE {
                                println!("{} {key:<6} {}", elapsed(), describe_state(state));
                            }
                        }
                        // One more word: fold it into this listener's copy of the reply.
                        Event::Delta { position, delta } => {
                            let reply = replies.entry(key).or_default();
                            reply.accumulate(delta);
                            if !*LIVE {
                                println!(
                                    "{} {key:<6} {position}: +{:?} ({}/{} tokens)",
                                    elapsed(),
                                    delta.text,
                                    reply.tokens,
                                    reply.total
                                );
                            }
                        }
                    }
                },
                false,
            )
        })
        .into();

    let done = Arc::new(AtomicBool::new(false));
    let renderer = LIVE.then(|| {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            print!("\x1b[?25l");
            render(true);
            while !done.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                render(false);
            }
        })
    });

    let mut handles = vec![
        (
            "alice",
            start(
                "alice",
                "Sure! Here is a short plan for your trip to Lisbon: day one the old town and \
                 its trams, day two Belém and the riverside, day three a train to Sintra.",
                None,
            ),
        ),
        (
            "bob",
            start(
                "bob",
                "The failing test is flaky because it sleeps instead of waiting for the \
                 listener; replace the sleep with a channel and it will pass.",
                None,
            ),
        ),
        (
            "carol",
            start(
                "carol",
                "Let me summarise the forty-page contract for you: the parties agree that \
                 delivery happens in three phases, each with its own acceptance test and \
                 its own penalty clause.",
                Some(9),
            ),
        ),
        (
            "dave",
            start(
                "dave",
                "Once upon a time, in a kingdom by the sea, there lived a lighthouse keeper \
                 who collected the stories of every ship that passed, and wrote them all \
                 down in a book that nobody was ever allowed to read.",
                None,
            ),
        ),
    ];

    let late_listener = Arc::new(AtomicUsize::new(0));
    let ((), _late_subscription, erin) = tokio::join!(
        // A second run on a busy conversation is refused; the task is handed back.
        async {
            wait_for_tokens("bob", 3).await;
            match AGENTS.run("bob", agent("A second answer nobody asked for.", None)) {
                Err(error @ RunError::Busy { .. }) => {
                    event(format_args!("bob: second run refused: {error}"));
                }
                Err(error) => event(format_args!("bob: second run refused: {error}")),
                Ok(handle) => event(format_args!("bob: unexpectedly ran {}", handle.run_id())),
            }
        },
        // A late listener joins alice with `immediate`: its first call replays the current
        // state, then it follows every transition.
        async {
            wait_for_tokens("alice", 6).await;
            let first = Arc::new(Mutex::new(None));
            let (sink, count) = (Arc::clone(&first), Arc::clone(&late_listener));
            let subscription = AGENTS.listen(
                "alice",
                move |event: &Event<Reply, AgentError>| {
                    count.fetch_add(1, Ordering::Relaxed);
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert_with(|| match event {
                            Event::State {
                                state:
                                    State::Running {
                                        run,
                                        progress: Some(reply),
                                    },
                                ..
                            } => format!("{run} at {}/{} tokens", reply.tokens, reply.total),
                            Event::State { state, .. } => describe_state(state),
                            Event::Delta { position, .. } => format!("a delta at {position}"),
                        });
                },
                true,
            );
            let replayed = first
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| "nothing".to_owned());
            event(format_args!(
                "alice: late listener joined, first call replayed {replayed}"
            ));
            subscription
        },
        // dave's user interrupts him: check that he runs, then stop that very run. Then erin
        // gets her turn.
        async {
            wait_for_tokens("dave", 12).await;
            match AGENTS.state_node("dave") {
                StateNode::Running(running) => {
                    let run = running.run_id();
                    match running.stop(Reason::from("user interrupted")) {
                        Ok(()) => event(format_args!("dave: {run} stopped: user interrupted")),
                        Err(error) => event(format_args!("dave: stop refused: {error}")),
                    }
                }
                StateNode::Idle(_) => event("dave: already idle, nothing to stop"),
            }
            let erin = start(
                "erin",
                "Your flight is confirmed: seat 14A, boarding at gate 22, departure at 9:40.",
                None,
            );
            ("erin", erin)
        },
    );
    handles.push(erin);

    let mut outcomes = Vec::new();
    for (key, handle) in handles {
        let run = handle.run_id();
        outcomes.push((key, run, handle.await));
    }
    let late = late_listener.load(Ordering::Relaxed);
    event(format_args!(
        "alice: the late listener was called {late} times (1 replay + later events)"
    ));

    done.store(true, Ordering::Release);
    if let Some(renderer) = renderer {
        let _ = renderer.await;
        render(false);
        print!("\x1b[?25h");
    }

    println!();
    println!("summary");
    println!(
        "  {:<6} {:<7} {:<26} {:>6}  error view",
        "key", "run", "outcome", "tokens"
    );
    for (key, run, outcome) in &outcomes {
        let tokens = LAST_REPLY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or_else(
                || "-".to_owned(),
                |reply| format!("{}/{}", reply.tokens, reply.total),
            );
        let state = AGENTS.state(key);
        let error = match state.error() {
            Some(LastError::Stopped(reason)) => format!("stopped: {reason}"),
            Some(LastError::Failed(error)) => format!("failed: {error}"),
            None => "-".to_owned(),
        };
        println!(
            "  {key:<6} {:<7} {:<26} {tokens:>6}  {error}",
            run.to_string(),
            describe_outcome(outcome),
        );
    }

    // Graceful shutdown: stops whatever still runs, ends every event stream, and waits until every
    // task's stream is dropped.
    AGENTS.shutdown(Reason::from("demo over")).await;
    println!(
        "  finished in {:.2}s; shut down with {} tasks alive",
        START.elapsed().as_secs_f64(),
        AGENTS.live_tasks()
    );
}
