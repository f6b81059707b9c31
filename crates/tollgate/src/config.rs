//! [`StackConfig`]: the stack's settings, from a preset, code, or a TOML or JSON file with flat
//! keys such as `max_requests_per_minute`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A starting point for the settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// One call at a time, about one every 2 s (30 a minute), patient retries, a breaker that
    /// trips early, large batches: for free tiers and shared keys.
    Conservative,
    /// Ten calls at a time, limits learned from the provider's headers, patient retries
    /// (default).
    #[default]
    Balanced,
    /// Fifty calls at a time, short backoff, a breaker that tolerates more, small fast batches:
    /// for high tiers.
    Aggressive,
}

/// Why a config was refused: the field, the value, and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field (`circuit_breaker.failure_threshold`), or the file.
    pub field: String,
    /// What was wrong, and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A duration as a number of seconds (`30`, `0.5`) or a humantime string (`"30s"`, `"1m"`).
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Seconds(f64),
        Text(String),
    }
    match Option::<Either>::deserialize(deserializer)? {
        None => Ok(None),
        // Negative, NaN, infinite, or more seconds than a Duration holds (1e20): an error.
        Some(Either::Seconds(s)) => Duration::try_from_secs_f64(s).map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{s} is not a duration; use seconds (30) or text (\"30s\")"
            ))
        }),
        Some(Either::Text(text)) => humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); use \"30s\", \"2m\" or seconds"
            ))
        }),
    }
}

/// `circuit_breaker.*`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitSection {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: Option<u32>,
    /// How long it stays open before probing (alias `open_duration`).
    #[serde(deserialize_with = "duration", alias = "open_duration")]
    pub recovery_timeout: Option<Duration>,
    /// Probes let through half-open.
    pub half_open_requests: Option<u32>,
}

/// `backoff_strategy.*`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffSection {
    /// Retries after the first attempt.
    pub max_retries: Option<u32>,
    /// The first wait.
    #[serde(deserialize_with = "duration", alias = "base_delay")]
    pub initial_delay: Option<Duration>,
    /// The longest wait.
    #[serde(deserialize_with = "duration")]
    pub max_delay: Option<Duration>,
    /// Growth per retry.
    pub multiplier: Option<f64>,
    /// Whether waits are jittered (full jitter).
    pub jitter: Option<bool>,
    /// Whether a billed call (generation, embeddings) whose connection broke after it may have
    /// been sent is sent again (default false): the provider may have processed it, so it may
    /// be billed twice. Uploads and batch creations are never resent after such a failure.
    pub resend_unanswered: Option<bool>,
}

/// `cache.*`: the response cache (deterministic requests and embeddings).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Whether answers are cached (default true).
    pub enabled: Option<bool>,
    /// Answers kept at most (default 10,000).
    pub max_entries: Option<u64>,
    /// Bytes kept at most (default 256 MiB).
    pub max_bytes: Option<u64>,
    /// How long an answer stays fresh (default 1 h).
    #[serde(deserialize_with = "duration")]
    pub ttl: Option<Duration>,
}

/// `timeouts.*`: the deadlines of each attempt.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutSection {
    /// Time to the first token of a stream (default 60 s).
    #[serde(deserialize_with = "duration")]
    pub first_byte: Option<Duration>,
    /// Longest silence between chunks (default 30 s).
    #[serde(deserialize_with = "duration")]
    pub idle: Option<Duration>,
    /// Total time of an attempt before the allowance for output tokens (default 60 s).
    #[serde(deserialize_with = "duration")]
    pub total: Option<Duration>,
    /// Added to the total per output token allowed (default 50 ms).
    #[serde(deserialize_with = "duration")]
    pub per_output_token: Option<Duration>,
}

/// `batch.*`: micro-batching of embeddings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSection {
    /// Whether embeddings are batched (default true).
    pub enabled: Option<bool>,
    /// Inputs per merged call.
    pub max_batch_size: Option<u32>,
    /// The longest a request waits for others.
    #[serde(deserialize_with = "duration")]
    pub max_wait: Option<Duration>,
}

/// The stack's settings: a [`Preset`], overridden by whatever is set. Loads flat config files
/// (`max_requests_per_minute`, `circuit_breaker.*`, `backoff_strategy.*`, ...) as they are
/// (TOML or JSON).
///
/// ```
/// let config = tollgate::StackConfig::from_toml(r#"
///     preset = "conservative"
///     max_requests_per_minute = 60
///     [circuit_breaker]
///     failure_threshold = 3
///     recovery_timeout = "45s"
///     [backoff_strategy]
///     initial_delay = 1
///     max_delay = 60
/// "#).unwrap();
/// assert_eq!(config.max_requests_per_minute, Some(60));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackConfig {
    /// The starting point (default: balanced).
    pub preset: Option<Preset>,
    /// Requests per minute (unset: the preset's, or learned from the provider's headers).
    pub max_requests_per_minute: Option<u64>,
    /// Tokens per minute.
    pub max_tokens_per_minute: Option<u64>,
    /// Calls in flight at most.
    pub max_concurrent_requests: Option<usize>,
    /// Whether the limit adapts below `max_concurrent_requests` to what the provider takes
    /// (default true).
    pub adaptive_concurrency: Option<bool>,
    /// Whether rate limits are kept per model (OpenAI's, the default) or per key across models
    /// (`false`: providers that count every model against one limit).
    pub limits_per_model: Option<bool>,
    /// Whether limits nobody configured are learned (default true): from the provider's
    /// rate-limit headers, or, when it sends none, as a pace from its 429s.
    pub learn_limits: Option<bool>,
    /// Seeds every random choice (retry and breaker jitter, throttling draws), for repeatable
    /// runs.
    pub seed: Option<u64>,
    /// One deadline across all attempts of a request.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Option<Duration>,
    /// The breaker.
    pub circuit_breaker: CircuitSection,
    /// Retries.
    pub backoff_strategy: BackoffSection,
    /// Micro-batching.
    pub batch: BatchSection,
    /// Per-attempt deadlines.
    pub timeouts: TimeoutSection,
    /// The response cache.
    pub cache: CacheSection,
}

impl StackConfig {
    /// Parses TOML.
    ///
    /// # Errors
    ///
    /// A field that is unknown, of the wrong type, or out of range.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|e| invalid("config", e.message().to_owned() + &span(text, e.span())))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses JSON.
    ///
    /// # Errors
    ///
    /// As [`from_toml`](Self::from_toml).
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_str(text).map_err(|e| invalid("config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.toml` or `.json` file.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or as [`from_toml`](Self::from_toml).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(&path.display().to_string(), e.to_string()))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        };
        parsed.map_err(|e| invalid(&format!("{} ({})", path.display(), e.field), e.message))
    }

    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &str, value: Option<u64>| match value {
            Some(0) => Err(invalid(
                field,
                "0 is not allowed; leave it out for no limit",
            )),
            _ => Ok(()),
        };
        positive("max_requests_per_minute", self.max_requests_per_minute)?;
        positive("max_tokens_per_minute", self.max_tokens_per_minute)?;
        positive(
            "max_concurrent_requests",
            self.max_concurrent_requests.map(|n| n as u64),
        )?;
        positive(
            "circuit_breaker.failure_threshold",
            self.circuit_breaker.failure_threshold.map(u64::from),
        )?;
        positive(
            "circuit_breaker.half_open_requests",
            self.circuit_breaker.half_open_requests.map(u64::from),
        )?;
        positive(
            "batch.max_batch_size",
            self.batch.max_batch_size.map(u64::from),
        )?;
        if let Some(m) = self.backoff_strategy.multiplier
            && !(m.is_finite() && m >= 1.0)
        {
            return Err(invalid(
                "backoff_strategy.multiplier",
                format!("{m} must be at least 1"),
            ));
        }
        if let (Some(low), Some(high)) = (
            self.backoff_strategy.initial_delay,
            self.backoff_strategy.max_delay,
        ) && low > high
        {
            return Err(invalid(
                "backoff_strategy.initial_delay",
                format!("{low:?} is above max_delay {high:?}"),
            ));
        }
        Ok(())
    }
}

fn span(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(range) => {
            let line = text[..range.start.min(text.len())].lines().count().max(1);
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_beyond_a_duration_are_an_error_not_a_panic() {
        // A panic before; the `stack_config` fuzz target checks it (fuzz/README.md).
        for text in [
            "request_timeout = 1e20",
            "[circuit_breaker]\nrecovery_timeout = 1.9e19",
        ] {
            let error = StackConfig::from_toml(text).unwrap_err();
            assert!(error.message.contains("is not a duration"), "{error}");
        }
        let error = StackConfig::from_json(r#"{"request_timeout": 1e300}"#).unwrap_err();
        assert!(error.message.contains("is not a duration"), "{error}");
        assert_eq!(
            StackConfig::from_toml("request_timeout = 1.8e10")
                .unwrap()
                .request_timeout,
            Some(Duration::from_secs(18_000_000_000))
        );
    }

    #[test]
    fn the_seeds_keys_load_from_toml_and_json() {
        let toml = StackConfig::from_toml(
            r#"
            max_requests_per_minute = 500
            max_concurrent_requests = 5
            [circuit_breaker]
            failure_threshold = 5
            recovery_timeout = 60
            [backoff_strategy]
            max_retries = 3
            initial_delay = "500ms"
            max_delay = "30s"
            multiplier = 2.0
            jitter = true
        "#,
        )
        .unwrap();
        let json = StackConfig::from_json(
            r#"{"max_requests_per_minute": 500, "max_concurrent_requests": 5,
                "circuit_breaker": {"failure_threshold": 5, "recovery_timeout": 60},
                "backoff_strategy": {"max_retries": 3, "initial_delay": 0.5, "max_delay": 30,
                                     "multiplier": 2.0, "jitter": true}}"#,
        )
        .unwrap();
        assert_eq!(toml, json);
        assert_eq!(
            toml.circuit_breaker.recovery_timeout,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            toml.backoff_strategy.initial_delay,
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn resending_unanswered_calls_is_opt_in() {
        let default = StackConfig::from_toml("").unwrap();
        assert!(!crate::stack::resolve(&default).resend_unanswered);
        let config = StackConfig::from_toml(
            r#"
            [backoff_strategy]
            max_retries = 2
            resend_unanswered = true
        "#,
        )
        .unwrap();
        assert_eq!(config.backoff_strategy.resend_unanswered, Some(true));
        assert!(crate::stack::resolve(&config).resend_unanswered);
        let json =
            StackConfig::from_json(r#"{"backoff_strategy": {"resend_unanswered": true}}"#).unwrap();
        assert_eq!(json.backoff_strategy.resend_unanswered, Some(true));
    }

    #[test]
    fn bad_configs_name_the_field_the_value_and_what_is_allowed() {
        let error = StackConfig::from_toml("max_concurrent_requests = 0").unwrap_err();
        assert_eq!(
            error.to_string(),
            "max_concurrent_requests: 0 is not allowed; leave it out for no limit"
        );
        let error = StackConfig::from_toml("[backoff_strategy]\nmultiplier = 0.5").unwrap_err();
        assert_eq!(
            error.to_string(),
            "backoff_strategy.multiplier: 0.5 must be at least 1"
        );
        let error = StackConfig::from_toml("max_request_per_minute = 5").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown field `max_request_per_minute`"),
            "{error}"
        );
        let error =
            StackConfig::from_toml("[circuit_breaker]\nrecovery_timeout = \"soon\"").unwrap_err();
        assert!(
            error.to_string().contains("\"soon\" is not a duration"),
            "{error}"
        );
        let error = StackConfig::from_toml("preset = \"reckless\"").unwrap_err();
        assert!(error.to_string().contains("reckless"), "{error}");
    }
}
