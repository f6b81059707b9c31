//! The provider's own view of its rate limits, read from response headers.
//!
//! Every provider reports limits differently (see `docs/outcomes.md`): OpenAI and
//! Groq send Go-style reset durations, Anthropic RFC 3339 timestamps, Azure bare remaining
//! counts, Mistral and Together their own names. [`RateLimitSnapshot::from_headers`] reads them
//! all into one shape so that the limiter can slow down *before* the provider answers 429.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::time::Instant;

use crate::Provider;

/// One limit as the provider reported it at the moment it sent the response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitWindow {
    /// The quota for the period (`x-ratelimit-limit-tokens`, ...).
    pub limit: Option<u64>,
    /// What is left of it (`x-ratelimit-remaining-tokens`, ...). Anthropic rounds token counts.
    pub remaining: Option<u64>,
    /// When the quota is fully restored, relative to the response.
    pub reset: Option<Duration>,
    /// The period the limit is counted over, when the provider's convention is known (a minute
    /// for OpenAI and Anthropic, a day for Groq's request limit, a second for Together).
    pub period: Option<Duration>,
}

impl RateLimitWindow {
    /// Whether no field is known.
    pub const fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// All the limits one response reported; stored in the response extensions by
/// [`ClassifyLayer`](crate::classify::ClassifyLayer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    /// Requests.
    pub requests: Option<RateLimitWindow>,
    /// Tokens (input and output together).
    pub tokens: Option<RateLimitWindow>,
    /// Input tokens (Anthropic).
    pub input_tokens: Option<RateLimitWindow>,
    /// Output tokens (Anthropic).
    pub output_tokens: Option<RateLimitWindow>,
    /// When the request that produced this response was sent. A snapshot is the truth at that
    /// moment; one from an older request that arrives late must not overwrite a newer one.
    pub sent_at: Option<Instant>,
}

impl RateLimitSnapshot {
    /// Reads every rate-limit header family from `headers`.
    ///
    /// `provider` decides conventions the header names leave open (Groq's request limit is per
    /// day); `None` reads every family it finds. RFC 3339 resets are made relative to the
    /// response's `date` header when present, else to `now`.
    pub fn from_headers(headers: &HeaderMap, provider: Option<Provider>, now: SystemTime) -> Self {
        crate::providers::snapshot_from_headers(headers, provider, now)
    }

    /// Whether the headers said nothing about limits.
    pub const fn is_empty(&self) -> bool {
        self.requests.is_none()
            && self.tokens.is_none()
            && self.input_tokens.is_none()
            && self.output_tokens.is_none()
    }
}
