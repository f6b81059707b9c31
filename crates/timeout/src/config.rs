//! How long an attempt may take: the layer's limits and a request's own.

use std::time::Duration;

use tollgate_core::error::ConfigError;

/// The limits of a [`TimeoutLayer`](crate::TimeoutLayer).
///
/// [`Default`] is tuned for LLM APIs, where a long answer is not a slow one: 60 s to the first
/// byte of a stream, 30 s of silence between chunks, and a total of 60 s plus 50 ms per output
/// token the request allows (`max_tokens`; 8,192 assumed when it sets none) — 72.8 s for
/// `max_tokens: 256`, about 4.4 min for 4,096. `None` lifts a limit.
///
/// A request can change any of them for itself with a [`Timeouts`] extension; its
/// [`Deadline`](tollgate_core::Deadline) extension, when sooner, wins over all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct TimeoutConfig {
    /// For a streamed request (`"stream": true`): the longest wait for the response headers,
    /// then for the first data of the body — the time to first token. The wait for that first
    /// data is never cut shorter than [`idle`](Self::idle) after the headers.
    ///
    /// A request that does not stream gets its headers only once the whole answer is written,
    /// so its wait for them is bounded by the total alone.
    #[cfg_attr(
        feature = "serde",
        serde(with = "tollgate_core::config::duration::option")
    )]
    pub first_byte: Option<Duration>,
    /// The longest silence between two chunks of a body, counted from when the caller asks for
    /// the next one (a caller that takes its time between reads is not a stalled upstream).
    #[cfg_attr(
        feature = "serde",
        serde(with = "tollgate_core::config::duration::option")
    )]
    pub idle: Option<Duration>,
    /// The total time of an attempt, from the call to the body's last byte, before the
    /// allowance for output tokens is added.
    #[cfg_attr(
        feature = "serde",
        serde(with = "tollgate_core::config::duration::option")
    )]
    pub total: Option<Duration>,
    /// Added to [`total`](Self::total) for each output token a generation request allows
    /// (`max_tokens`, `max_completion_tokens`, ... as [`LlmRequest`](tollgate_core::LlmRequest)
    /// reads them). `None` or zero: the total does not grow.
    #[cfg_attr(
        feature = "serde",
        serde(with = "tollgate_core::config::duration::option")
    )]
    pub per_output_token: Option<Duration>,
    /// The output tokens assumed for a generation request that sets no cap.
    pub default_output_tokens: u32,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            first_byte: Some(Duration::from_secs(60)),
            idle: Some(Duration::from_secs(30)),
            total: Some(Duration::from_secs(60)),
            per_output_token: Some(Duration::from_millis(50)),
            default_output_tokens: 8_192,
        }
    }
}

impl TimeoutConfig {
    /// No limits at all (a [`Deadline`](tollgate_core::Deadline) still applies).
    pub const fn unlimited() -> Self {
        Self {
            first_byte: None,
            idle: None,
            total: None,
            per_output_token: None,
            default_output_tokens: 0,
        }
    }

    /// Checks every value.
    ///
    /// # Errors
    ///
    /// A limit of zero, by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = [
            (self.first_byte, "first_byte"),
            (self.idle, "idle"),
            (self.total, "total"),
        ];
        for (limit, field) in limits {
            if limit.is_some_and(|limit| limit.is_zero()) {
                return Err(ConfigError::new(
                    field,
                    "0s",
                    "must be positive (omit it for no limit)",
                ));
            }
        }
        Ok(())
    }

    /// This configuration with a request's own limits over it.
    pub(crate) fn with(mut self, overrides: &Timeouts) -> Self {
        self.first_byte = overrides.first_byte.or(self.first_byte);
        self.idle = overrides.idle.or(self.idle);
        self.total = overrides.total.or(self.total);
        self.per_output_token = overrides.per_output_token.or(self.per_output_token);
        self
    }

    /// The total time of a request that allows `output_tokens` (`None`: not a generation).
    pub(crate) fn total_for(&self, output_tokens: Option<u32>) -> Option<Duration> {
        let total = self.total?;
        let per_token = self.per_output_token.unwrap_or_default();
        Some(match output_tokens {
            Some(tokens) => total.saturating_add(per_token.saturating_mul(tokens)),
            None => total,
        })
    }
}

/// A request's own limits, as a request extension; each one set replaces the layer's.
///
/// A zero limit times out at once; [`Duration::MAX`] lifts a limit for this request.
///
/// ```
/// use std::time::Duration;
/// use tollgate_timeout::Timeouts;
///
/// let mut request = http::Request::new(());
/// // A summary of a whole book: allow a long silence while the model reads it.
/// request.extensions_mut().insert(
///     Timeouts::new()
///         .with_first_byte(Duration::from_secs(180))
///         .with_idle(Duration::from_secs(90)),
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timeouts {
    first_byte: Option<Duration>,
    idle: Option<Duration>,
    total: Option<Duration>,
    per_output_token: Option<Duration>,
}

impl Timeouts {
    /// Nothing changed: the layer's limits.
    pub const fn new() -> Self {
        Self {
            first_byte: None,
            idle: None,
            total: None,
            per_output_token: None,
        }
    }

    /// Replaces [`TimeoutConfig::first_byte`].
    pub const fn with_first_byte(mut self, limit: Duration) -> Self {
        self.first_byte = Some(limit);
        self
    }

    /// Replaces [`TimeoutConfig::idle`].
    pub const fn with_idle(mut self, limit: Duration) -> Self {
        self.idle = Some(limit);
        self
    }

    /// Replaces [`TimeoutConfig::total`] (the allowance per output token is still added; set
    /// [`with_per_output_token`](Self::with_per_output_token) to zero for a fixed total).
    pub const fn with_total(mut self, limit: Duration) -> Self {
        self.total = Some(limit);
        self
    }

    /// Replaces [`TimeoutConfig::per_output_token`].
    pub const fn with_per_output_token(mut self, allowance: Duration) -> Self {
        self.per_output_token = Some(allowance);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_grows_with_the_output_allowed() {
        let config = TimeoutConfig::default();
        assert_eq!(config.total_for(None), Some(Duration::from_secs(60)));
        assert_eq!(
            config.total_for(Some(256)),
            Some(Duration::from_millis(72_800))
        );
        assert_eq!(
            config
                .total_for(Some(u32::MAX))
                .map(|d| d > Duration::from_secs(86_400)),
            Some(true)
        );
        let fixed = config.with(&Timeouts::new().with_per_output_token(Duration::ZERO));
        assert_eq!(fixed.total_for(Some(4_096)), Some(Duration::from_secs(60)));
        assert_eq!(TimeoutConfig::unlimited().total_for(Some(10)), None);
    }

    #[test]
    fn a_request_overrides_only_what_it_sets() {
        let config =
            TimeoutConfig::default().with(&Timeouts::new().with_idle(Duration::from_secs(1)));
        assert_eq!(config.idle, Some(Duration::from_secs(1)));
        assert_eq!(config.first_byte, TimeoutConfig::default().first_byte);
        assert_eq!(config.total, TimeoutConfig::default().total);
    }

    #[test]
    fn a_zero_limit_is_refused_by_name() {
        let config = TimeoutConfig {
            idle: Some(Duration::ZERO),
            ..TimeoutConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field(), "idle");
        TimeoutConfig::default().validate().unwrap();
        TimeoutConfig::unlimited().validate().unwrap();
    }

    #[cfg(feature = "serde")]
    #[test]
    fn loads_human_readable_durations() {
        let config: TimeoutConfig = serde_json::from_str(
            r#"{"first_byte": "20s", "idle": "5s", "total": null, "per_output_token": "25ms"}"#,
        )
        .unwrap();
        assert_eq!(config.first_byte, Some(Duration::from_secs(20)));
        assert_eq!(config.idle, Some(Duration::from_secs(5)));
        assert_eq!(config.total, None);
        assert_eq!(config.per_output_token, Some(Duration::from_millis(25)));
        assert_eq!(config.default_output_tokens, 8_192);
        assert!(serde_json::from_str::<TimeoutConfig>(r#"{"idel": "5s"}"#).is_err());
    }
}
