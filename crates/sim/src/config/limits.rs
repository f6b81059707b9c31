//! Per-key limits and the keys that carry them.

use std::time::Duration;

use serde::Deserialize;
use tollgate_core::error::ConfigError;

use super::field;

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
    /// How a limit is counted: a token bucket (the default, as OpenAI and Anthropic do), or
    /// Azure-style fixed windows of a few seconds holding the per-minute quota scaled down.
    pub window: Window,
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
        if let Window::Fixed(window) = self.window
            && (window.is_zero() || window > Duration::from_secs(60))
        {
            let shown = humantime::format_duration(window);
            return Err(ConfigError::new(
                field(table, "window"),
                shown,
                "must be between 1ms and 60s",
            ));
        }
        Ok(())
    }
}

/// How a per-minute limit is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Window {
    /// A bucket holding a minute's quota, refilled continuously (OpenAI, Anthropic).
    #[default]
    TokenBucket,
    /// Fixed windows of this length, each allowing the per-minute quota scaled to it (Azure
    /// enforces RPM over 1 s or 10 s windows).
    Fixed(Duration),
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "token_bucket" {
            return Ok(Self::TokenBucket);
        }
        humantime::parse_duration(&text)
            .map(Self::Fixed)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "window must be \"token_bucket\" or a duration such as \"10s\", not {text:?}"
                ))
            })
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
    /// Every request with this key is a 429 `insufficient_quota`.
    #[serde(default)]
    pub quota_exhausted: bool,
    /// The key is revoked (every request is a 401) from this long after the start on.
    #[serde(default, with = "humantime_serde")]
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
            quota_exhausted: false,
            revoked_after: None,
        }
    }

    /// This key's limits. A key that sets any of the five limits has exactly the ones it sets
    /// (an Anthropic-style key with input and output limits has no combined one); a key that
    /// sets none has `defaults`.
    pub fn limits_over(&self, defaults: &Limits) -> Limits {
        let own = [
            self.requests_per_minute,
            self.tokens_per_minute,
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
            self.requests_per_day,
        ];
        let window = self.window.unwrap_or(defaults.window);
        if own.iter().all(Option::is_none) {
            return Limits {
                window,
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
        }
    }
}
