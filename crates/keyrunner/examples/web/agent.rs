//! The fake agent: streams a canned reply to a prompt, one token per tick, and stops as soon as
//! its run's abort signal fires.

use std::time::Duration;

use futures::stream::{self, BoxStream, Stream, StreamExt};
use keyrunner::{AbortSignal, Delta, TaskContext};
use serde::Deserialize;

use crate::app::AgentKey;

/// Tokens streamed when the request does not say.
pub(crate) const DEFAULT_TOKENS: u32 = 60;
/// The pause before each token when the request does not say.
pub(crate) const DEFAULT_INTERVAL_MS: u64 = 80;
/// The most tokens one run may ask for.
pub(crate) const MAX_TOKENS: u32 = 100_000;
/// The longest pause one run may ask for between two tokens.
pub(crate) const MAX_INTERVAL_MS: u64 = 60_000;

/// The body of `POST /agents/{key}/run`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunRequest {
    /// What the agent is asked; its reply starts by quoting it.
    pub(crate) prompt: String,
    /// How many tokens to stream ([`DEFAULT_TOKENS`] if absent).
    #[serde(default)]
    pub(crate) tokens: Option<u32>,
    /// The pause before each token, in milliseconds ([`DEFAULT_INTERVAL_MS`] if absent).
    #[serde(default)]
    pub(crate) interval_ms: Option<u64>,
}

/// A [`RunRequest`] whose numbers are within bounds.
#[derive(Clone, Debug)]
pub(crate) struct Agent {
    prompt: String,
    tokens: u32,
    interval: Duration,
}

impl RunRequest {
    /// Checks the bounds, filling in the defaults; the error says which field is wrong.
    pub(crate) fn validate(self) -> Result<Agent, String> {
        let tokens = self.tokens.unwrap_or(DEFAULT_TOKENS);
        if !(1..=MAX_TOKENS).contains(&tokens) {
            return Err(format!("`tokens` must be between 1 and {MAX_TOKENS}"));
        }
        let interval_ms = self.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
        if interval_ms > MAX_INTERVAL_MS {
            return Err(format!("`interval_ms` must be at most {MAX_INTERVAL_MS}"));
        }
        Ok(Agent {
            prompt: self.prompt,
            tokens,
            interval: Duration::from_millis(interval_ms),
        })
    }
}

impl Agent {
    /// The task to hand the repository: the reply's tokens, each a [`Delta`] that the
    /// repository appends to the reply so far.
    ///
    /// Watchers get each token as it comes (an `Event::Delta`), and anyone reading the state
    /// gets the whole reply so far: the repository folds the deltas into it.
    pub(crate) fn task(
        self,
    ) -> impl FnOnce(TaskContext<AgentKey>) -> BoxStream<'static, Delta<String>> {
        move |cx| self.tokens(cx.abort_signal().clone()).map(Delta).boxed()
    }

    /// The reply's tokens, one per tick, ending early once `signal` fires.
    ///
    /// The repository drops a stopped run's stream at its next poll anyway; a real agent
    /// watches the signal to cancel work that outlives a poll (a request to a model in flight).
    pub(crate) fn tokens(self, signal: AbortSignal) -> impl Stream<Item = String> + Send + 'static {
        let interval = self.interval;
        stream::iter(reply_tokens(&self.prompt, self.tokens))
            .then(move |token| async move {
                tokio::time::sleep(interval).await;
                token
            })
            .take_until(signal.aborted())
    }
}

/// The `tokens` tokens of the canned reply to `prompt`: the prompt quoted, then a paragraph
/// that repeats. Concatenated, they are the full reply.
pub(crate) fn reply_tokens(prompt: &str, tokens: u32) -> impl Iterator<Item = String> + use<> {
    let quoted = format!("You asked: “{}”.", prompt.trim());
    let answer = "Here is what I found. A key runs at most one agent at a time; anyone can \
                  watch it live, and only a check of its state lets you run or stop it.";
    let words: Vec<String> = quoted
        .split_whitespace()
        .chain(answer.split_whitespace())
        .map(str::to_owned)
        .collect();
    (0..tokens as usize).map(move |index| {
        let word = &words[index % words.len()];
        if index == 0 {
            word.clone()
        } else {
            format!(" {word}")
        }
    })
}
