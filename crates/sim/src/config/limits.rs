//! Per-key limits and the keys that carry them.

use std::time::Duration;

use serde::Deserialize;
use tollgate_core::error::ConfigError;

use super::field;
use super::shape::{Burst, Window};

/// Per-key limits, enforced the way the providers do.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute (`None`: unlimited).
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per minute (OpenAI's TPM).
    pub tokens_per_minute: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM).
    pub input_tokens_per_minute: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM).
    pub output_tokens_per_minute: Option<u64>,
    /// Requests per day (Gemini's RPD, OpenAI's RPD on some tiers): a bucket holding a day's
    /// quota, refilled continuously over 24 hours, whatever the [`window`](Self::window).
    pub requests_per_day: Option<u64>,
    /// How a limit is counted: a token bucket (the default, as OpenAI and Anthropic do),
    /// Azure-style fixed windows of a few seconds holding the per-minute quota scaled down, a
    /// sliding window, or a leaky bucket.
    pub window: Window,
    /// The capacity of a `token_bucket` (default: a minute's quota) or how far a
    /// `leaky_bucket` may run ahead of schedule (default: one request's worth), in units of
    /// each dimension. Fixed and sliding windows take none.
    pub burst: Option<Burst>,
    /// Whether responses announce the limits: the provider's rate-limit headers on every
    /// response and the wait headers (`retry-after`, ...) on a 429. When false, a 429 says how
    /// long to wait only where the provider's body does (OpenAI's "Please try again in
    /// 1.146s", Azure's "Please retry after 2 seconds", Gemini's `RetryInfo`).
    pub rate_limit_headers: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_minute: Some(10_000),
            tokens_per_minute: Some(10_000_000),
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
            requests_per_day: None,
            window: Window::TokenBucket,
            burst: None,
            rate_limit_headers: true,
        }
    }
}

impl Limits {
    pub(super) fn validate(&self, table: &str) -> Result<(), ConfigError> {
        let fields = [
            (self.requests_per_minute, "requests_per_minute"),
            (self.tokens_per_minute, "tokens_per_minute"),
            (self.input_tokens_per_minute, "input_tokens_per_minute"),
            (self.output_tokens_per_minute, "output_tokens_per_minute"),
            (self.requests_per_day, "requests_per_day"),
        ];
        for (value, name) in fields {
            if value == Some(0) {
                return Err(ConfigError::new(
                    field(table, name),
                    0,
                    "must be at least 1 (omit it for no limit)",
                ));
            }
        }
        if let Window::Fixed(window) | Window::Sliding(window) = self.window
            && (window.is_zero() || window > Duration::from_secs(60))
        {
            return Err(ConfigError::new(
                field(table, "window"),
                self.window,
                "must be between 1ms and 60s",
            ));
        }
        if let Some(burst) = self.burst {
            self.validate_burst(burst, table)?;
        }
        Ok(())
    }

    fn validate_burst(&self, burst: Burst, table: &str) -> Result<(), ConfigError> {
        const ZERO: &str = "must be at least 1 (leave it out for the default)";
        let name = field(table, "burst");
        let per_minute = [
            (self.requests_per_minute, "requests"),
            (self.tokens_per_minute, "tokens"),
            (self.input_tokens_per_minute, "input_tokens"),
            (self.output_tokens_per_minute, "output_tokens"),
        ];
        match burst {
            Burst::Units(0) => Err(ConfigError::new(name, 0, ZERO)),
            _ if !self.window.has_burst() => Err(ConfigError::new(
                name,
                burst,
                "applies to window = \"token_bucket\" or \"leaky_bucket\" only, not to fixed \
                 or sliding windows",
            )),
            Burst::Units(units) => match per_minute.iter().filter(|(l, _)| l.is_some()).count() {
                1 => Ok(()),
                0 => Err(ConfigError::new(
                    name,
                    units,
                    "applies to per-minute limits, and there are none",
                )),
                _ => Err(ConfigError::new(
                    name,
                    units,
                    "is ambiguous with several per-minute limits: give each its own, as \
                     burst = { requests = 5, tokens = 4000 }",
                )),
            },
            Burst::PerDimension(each) => {
                let given = [
                    each.requests,
                    each.tokens,
                    each.input_tokens,
                    each.output_tokens,
                ];
                if given.iter().all(Option::is_none) {
                    return Err(ConfigError::new(
                        name,
                        burst,
                        "must name requests, tokens, input_tokens or output_tokens",
                    ));
                }
                for (units, (limit, dimension)) in given.into_iter().zip(per_minute) {
                    let Some(units) = units else { continue };
                    let name = || format!("{name}.{dimension}");
                    if units == 0 {
                        return Err(ConfigError::new(name(), 0, ZERO));
                    }
                    if limit.is_none() {
                        return Err(ConfigError::new(
                            name(),
                            units,
                            "names a dimension without a per-minute limit",
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// One configured API key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The secret clients send (`Authorization: Bearer ...`, `x-api-key`, `api-key`,
    /// `x-goog-api-key` or a `?key=` query parameter).
    pub key: String,
    /// A name for stats and logs (the secret never appears there); defaults to the key's
    /// [`CredentialId`](tollgate_core::CredentialId).
    #[serde(default)]
    pub name: Option<String>,
    /// Requests per minute. A key that sets any of its five limits has exactly those it sets;
    /// one that sets none has the `[limits]` table's.
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Input tokens per minute.
    #[serde(default)]
    pub input_tokens_per_minute: Option<u64>,
    /// Output tokens per minute.
    #[serde(default)]
    pub output_tokens_per_minute: Option<u64>,
    /// Requests per day.
    #[serde(default)]
    pub requests_per_day: Option<u64>,
    /// Overrides `limits.window`.
    #[serde(default)]
    pub window: Option<Window>,
    /// This key's burst (see [`Limits::burst`]). A key that sets any of its five limits or its
    /// own `window` has only the burst it sets; one that sets none of them has the `[limits]`
    /// table's.
    #[serde(default)]
    pub burst: Option<Burst>,
    /// Overrides `limits.rate_limit_headers`: `false` hides this key's rate-limit and wait
    /// headers.
    #[serde(default)]
    pub rate_limit_headers: Option<bool>,
    /// Every request with this key is a 429 `insufficient_quota`.
    #[serde(default)]
    pub quota_exhausted: bool,
    /// The key is revoked (every request is a 401) from this long after the start on.
    #[serde(default, with = "tollgate_core::config::duration::option")]
    pub revoked_after: Option<Duration>,
}

impl KeyConfig {
    /// A key with the default limits.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            name: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
            requests_per_day: None,
            window: None,
            burst: None,
            rate_limit_headers: None,
            quota_exhausted: false,
            revoked_after: None,
        }
    }

    /// This key's limits. A key that sets any of the five limits has exactly the ones it sets
    /// (an Anthropic-style key with input and output limits has no combined one); a key that
    /// sets none has `defaults`. The window and `rate_limit_headers` are the key's own if it
    /// sets them, else the defaults'; the burst goes with the limits and the window (it is a
    /// quantity of those limits, in that shape).
    pub fn limits_over(&self, defaults: &Limits) -> Limits {
        let own = [
            self.requests_per_minute,
            self.tokens_per_minute,
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
            self.requests_per_day,
        ];
        let window = self.window.unwrap_or(defaults.window);
        let rate_limit_headers = self
            .rate_limit_headers
            .unwrap_or(defaults.rate_limit_headers);
        if own.iter().all(Option::is_none) {
            let burst = match self.window {
                Some(_) => self.burst,
                None => self.burst.or(defaults.burst),
            };
            return Limits {
                window,
                burst,
                rate_limit_headers,
                ..*defaults
            };
        }
        Limits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            input_tokens_per_minute: self.input_tokens_per_minute,
            output_tokens_per_minute: self.output_tokens_per_minute,
            requests_per_day: self.requests_per_day,
            window,
            burst: self.burst,
            rate_limit_headers,
        }
    }
}
