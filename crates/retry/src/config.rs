//! [`RetryConfig`]: the retry layer's settings as data, for config files.

use std::time::Duration;

use tollgate_core::config::ConfigError;

use crate::backoff::{Backoff, Jitter};
use crate::layer::RetryLayer;

/// How waits between attempts vary, as written in a config file: `true` (full jitter),
/// `false` (none), `"full"`, `"equal"`, `"none"`, or a share such as `0.25` (±25 %).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(untagged))]
pub enum JitterSetting {
    /// `true`: full jitter; `false`: none.
    On(bool),
    /// A share of the wait, either way (`0.25`: ±25 %).
    Share(f64),
    /// `"full"`, `"equal"` or `"none"`.
    Named(JitterName),
}

/// The named jitters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum JitterName {
    /// A wait drawn between zero and the computed one.
    Full,
    /// Half the computed wait, plus up to the other half.
    Equal,
    /// The computed wait.
    None,
}

impl JitterSetting {
    /// The jitter it stands for.
    pub fn jitter(self) -> Jitter {
        match self {
            Self::On(true) | Self::Named(JitterName::Full) => Jitter::Full,
            Self::On(false) | Self::Named(JitterName::None) => Jitter::None,
            Self::Named(JitterName::Equal) => Jitter::Equal,
            Self::Share(share) => Jitter::Proportional(share),
        }
    }
}

/// The retry layer's settings: how many attempts, how long between them, and within which
/// deadline. [`Default`] is [`RetryLayer::new`]'s: 5 attempts, full-jitter exponential backoff
/// from 500 ms doubling up to 30 s, no deadline, no resending of billed calls whose
/// connection broke.
///
/// With the `serde` feature it reads from TOML or JSON; durations are seconds or text:
///
/// ```toml
/// max_attempts = 6
/// initial_delay = "1s"
/// max_delay = "60s"
/// multiplier = 2.0
/// jitter = 0.25          # ±25 %; or true, false, "full", "equal", "none"
/// deadline = "5m"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RetryConfig {
    /// Attempts per request, the first included (1: no retries).
    pub max_attempts: u32,
    /// The first wait when the provider does not say how long.
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub initial_delay: Duration,
    /// The longest wait.
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub max_delay: Duration,
    /// Growth of the wait per retry.
    pub multiplier: f64,
    /// How waits vary, so that many callers do not retry in step.
    pub jitter: JitterSetting,
    /// One deadline across all attempts of a request (none: each attempt has its own
    /// timeouts only).
    #[cfg_attr(
        feature = "serde",
        serde(with = "tollgate_core::config::duration::option")
    )]
    pub deadline: Option<Duration>,
    /// Whether a billed call (generation, embeddings) whose connection broke after it may have
    /// been sent is sent again: the provider may have processed it, so it may be billed
    /// twice. Uploads and batch creations are never resent after such a failure.
    pub resend_unanswered: bool,
    /// Seeds the jitter, for repeatable runs.
    pub seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: JitterSetting::On(true),
            deadline: None,
            resend_unanswered: false,
            seed: None,
        }
    }
}

impl RetryConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not, by field name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                0,
                "must be at least 1 (1: no retries)",
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "multiplier",
                self.multiplier,
                "must be at least 1",
            ));
        }
        if self.initial_delay > self.max_delay {
            return Err(ConfigError::new(
                "initial_delay",
                text(self.initial_delay),
                format!("is above max_delay ({})", text(self.max_delay)),
            ));
        }
        if let JitterSetting::Share(share) = self.jitter
            && !(0.0..=1.0).contains(&share)
        {
            return Err(ConfigError::new(
                "jitter",
                share,
                "must be a share between 0 and 1, true, false, \"full\", \"equal\" or \"none\"",
            ));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "deadline",
                "0s",
                "must be positive; leave it out for none",
            ));
        }
        Ok(())
    }

    /// The backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff::Exponential {
            base: self.initial_delay,
            multiplier: self.multiplier,
            cap: self.max_delay,
            jitter: self.jitter.jitter(),
        }
    }
}

fn text(duration: Duration) -> String {
    tollgate_core::config::duration::format(duration)
}

impl RetryLayer {
    /// The retry layer with `config`.
    ///
    /// # Errors
    ///
    /// A setting that is not usable ([`RetryConfig::validate`]).
    pub fn configured(config: &RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut layer = Self::new()
            .with_max_attempts(config.max_attempts)
            .with_backoff(config.backoff())
            .with_resend_unanswered(config.resend_unanswered);
        if let Some(deadline) = config.deadline {
            layer = layer.with_deadline(deadline);
        }
        if let Some(seed) = config.seed {
            layer = layer.with_seed(seed);
        }
        Ok(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_layers_default_and_bad_values_name_their_field() {
        RetryLayer::configured(&RetryConfig::default()).unwrap();
        assert_eq!(RetryConfig::default().backoff(), Backoff::default());
        let error = RetryLayer::configured(&RetryConfig {
            initial_delay: Duration::from_secs(90),
            ..RetryConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "initial_delay: 1m 30s is above max_delay (30s)"
        );
        let error = RetryConfig {
            jitter: JitterSetting::Share(1.5),
            ..RetryConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.field(), "jitter");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn every_jitter_spelling_reads() {
        for (text, jitter) in [
            ("true", Jitter::Full),
            ("false", Jitter::None),
            ("\"equal\"", Jitter::Equal),
            ("\"none\"", Jitter::None),
            ("0.25", Jitter::Proportional(0.25)),
        ] {
            let config: RetryConfig =
                serde_json::from_str(&format!(r#"{{"jitter": {text}}}"#)).unwrap();
            assert_eq!(config.jitter.jitter(), jitter, "{text}");
        }
        let config: RetryConfig =
            serde_json::from_str(r#"{"initial_delay": 1, "max_delay": "1m"}"#).unwrap();
        assert_eq!(config.initial_delay, Duration::from_secs(1));
        assert!(serde_json::from_str::<RetryConfig>(r#"{"max_retries": 1}"#).is_err());
    }
}
