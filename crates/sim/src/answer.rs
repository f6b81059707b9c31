//! A generated answer, shared by every dialect's renderers.

use std::time::Duration;

use crate::prompt_cache::Cached;

/// How a stream breaks off, when it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Break {
    /// An error event after this many tokens, then the end.
    ErrorEvent(usize),
    /// The connection drops after this many tokens.
    Disconnect(usize),
    /// The stream goes silent after this many tokens and never ends.
    Stall(usize),
}

/// What the simulated model answers to one request.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    /// The request number, for ids.
    pub(crate) seq: u64,
    /// Unix seconds, for `created` fields.
    pub(crate) created: u64,
    /// The model named in the request.
    pub(crate) model: String,
    /// Prompt tokens, as the simulator counts them.
    pub(crate) prompt_tokens: u64,
    /// What the key's prompt cache held of the prompt.
    pub(crate) cached: Cached,
    /// The generated tokens.
    pub(crate) words: Vec<&'static str>,
    /// Whether the answer was cut by the output cap.
    pub(crate) truncated: bool,
    /// The time each token takes.
    pub(crate) per_token: Duration,
    /// Whether (and where) a stream breaks off.
    pub(crate) broken: Option<Break>,
}

impl Answer {
    /// The text of the whole answer.
    pub(crate) fn text(&self) -> String {
        self.words.join(" ")
    }

    /// A token as streamed: words after the first carry their leading space.
    pub(crate) fn piece(&self, i: usize) -> String {
        if i == 0 {
            self.words[0].to_owned()
        } else {
            format!(" {}", self.words[i])
        }
    }

    /// The tokens a stream actually sends before it breaks off (all, if it does not).
    pub(crate) fn streamed_tokens(&self) -> usize {
        match self.broken {
            Some(Break::ErrorEvent(at) | Break::Disconnect(at) | Break::Stall(at)) => {
                at.min(self.words.len())
            }
            None => self.words.len(),
        }
    }
}
