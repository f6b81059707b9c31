//! Live counters and the request log, served at `GET /sim/stats` and read through
//! [`SimHandle`](crate::SimHandle).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rejection {
    /// 429: a rate limit.
    RateLimited,
    /// 429 `insufficient_quota`.
    QuotaExhausted,
    /// 401: unknown or revoked key (Gemini: 400 `API_KEY_INVALID`, or 403 without a key).
    Unauthorized,
    /// 529 / 500 "Overloaded" / 503: over the hidden capacity (Gemini: always 503).
    Overloaded,
    /// 500: a random server error.
    ServerError,
    /// 413, or 429 "Request too large".
    TooLarge,
    /// 400: the request is malformed.
    BadRequest,
    /// 404: no such endpoint or object.
    NotFound,
}

impl Rejection {
    /// The snake_case name used in stats.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::Unauthorized => "unauthorized",
            Self::Overloaded => "overloaded",
            Self::ServerError => "server_error",
            Self::TooLarge => "too_large",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tokens served to one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    /// Requests admitted.
    pub requests: u64,
    /// Prompt tokens of the admitted requests.
    pub input_tokens: u64,
    /// Of those, the tokens read from the key's prompt cache.
    pub cached_input_tokens: u64,
    /// Output tokens generated.
    pub output_tokens: u64,
}

/// The simulator's counters since start (or the last reset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SimStats {
    /// Requests received, whatever became of them.
    pub received: u64,
    /// Requests answered with a 2xx.
    pub accepted: u64,
    /// Refusals, by reason.
    pub rejected: BTreeMap<Rejection, u64>,
    /// Requests that were never answered.
    pub hung: u64,
    /// Streams cut off mid-way.
    pub streams_disconnected: u64,
    /// Streams that went silent mid-way (`stream_stall_rate`).
    pub streams_stalled: u64,
    /// Streams that ended with an error event after a 200.
    pub stream_errors: u64,
    /// Requests in flight now (a stream until its last byte).
    pub in_flight: u64,
    /// The most in flight at once.
    pub max_in_flight: u64,
    /// Prompt tokens of the admitted requests, every key together (embeddings included).
    pub input_tokens: u64,
    /// Of those, the tokens read from the keys' prompt caches (see
    /// [`cached_share`](Self::cached_share)).
    pub cached_input_tokens: u64,
    /// Usage per key name.
    pub keys: BTreeMap<String, KeyUsage>,
    /// The scripted phase now in force, if any.
    pub phase: Option<String>,
}

impl SimStats {
    /// Refusals for `reason`.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }

    /// All refusals.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// The share of prompt tokens read from a prompt cache (0.0–1.0; 0 before any prompt).
    pub fn cached_share(&self) -> f64 {
        if self.input_tokens == 0 {
            0.0
        } else {
            self.cached_input_tokens as f64 / self.input_tokens as f64
        }
    }
}

/// One request, as the log remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LogEntry {
    /// Its number, from 0, in order of arrival.
    pub seq: u64,
    /// When it arrived, since the simulator started.
    #[serde(serialize_with = "millis")]
    pub at: Duration,
    /// The key's name (never the secret).
    pub key: Option<String>,
    /// `POST /v1/chat/completions`, ...
    pub route: String,
    /// The model asked for.
    pub model: Option<String>,
    /// The status answered (0 for a request that hung).
    pub status: u16,
    /// Why it was refused, if it was.
    pub rejection: Option<Rejection>,
    /// Prompt tokens (admitted requests).
    pub input_tokens: u64,
    /// Of those, the tokens read from the key's prompt cache.
    pub cached_input_tokens: u64,
    /// Output tokens generated (admitted requests).
    pub output_tokens: u64,
    /// Whether the answer was a stream.
    pub stream: bool,
}

fn millis<S: serde::Serializer>(at: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(at.as_millis()).unwrap_or(u64::MAX))
}
