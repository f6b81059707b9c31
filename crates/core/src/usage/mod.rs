//! Actual token usage, read from responses without buffering them.
//!
//! The limiter reserves an estimate before a request is sent and reconciles it with what the
//! provider actually counted. Usage arrives in the body: a `usage` object in OpenAI and
//! Anthropic JSON, `usageMetadata` in Gemini's, the last chunk of an OpenAI stream with
//! `stream_options.include_usage`, Anthropic's `message_start` and `message_delta` events.
//! [`ObservedBody`](crate::body::ObservedBody) finds it as the body passes, chunk by chunk,
//! whatever the chunking, and [`SseParser`] is the incremental SSE parser it reads streams with.

mod fields;
mod json;
mod lenient;
mod scanner;
mod sse;

pub use self::scanner::BodyFormat;
pub(crate) use self::scanner::UsageTracker;
pub use self::sse::{SseEvent, SseParser};

/// Tokens the provider counted for one call, normalised across providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Usage {
    /// All input tokens processed, cached ones included (OpenAI `prompt_tokens` /
    /// `input_tokens`; Anthropic `input_tokens + cache_creation_input_tokens +
    /// cache_read_input_tokens`; Gemini `promptTokenCount`).
    pub input_tokens: u64,
    /// Output tokens, reasoning tokens included (OpenAI `completion_tokens` / `output_tokens`;
    /// Anthropic `output_tokens`; Gemini `candidatesTokenCount + thoughtsTokenCount`).
    pub output_tokens: u64,
    /// The part of `input_tokens` read from the provider's prompt cache.
    pub cache_read_input_tokens: u64,
    /// The part of `input_tokens` written to the provider's prompt cache (Anthropic).
    pub cache_creation_input_tokens: u64,
}

impl Usage {
    /// Usage with the given input and output counts.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
        }
    }

    /// Input plus output tokens.
    pub const fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}
