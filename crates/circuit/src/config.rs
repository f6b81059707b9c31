//! What trips a breaker, and for how long it stays open.

use std::time::Duration;

use tollgate_core::error::ConfigError;

/// The calls a breaker's rates are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `n` whole seconds.
    Time(u32),
}

/// How a breaker behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Mode {
    /// Trips, opens and probes.
    #[default]
    Normal,
    /// Counts and reports transitions, but never refuses a call: to try a configuration on
    /// live traffic.
    MetricsOnly,
    /// Lets everything through and records nothing.
    Disabled,
    /// Refuses everything until reset.
    ForcedOpen,
}

/// A breaker's configuration. [`Default`]: 5 consecutive failures, or half
/// of at least 10 of the last 20 calls; open 30 s, doubling on repeated trips up to 5 min,
/// ±10 % jitter; 3 probes to close.
///
/// With the `serde` feature it reads from TOML or JSON (durations as seconds or text,
/// `window = { count = 20 }` or `{ time = 60 }`), every field optional:
///
/// ```toml
/// consecutive_failures = 5
/// open_duration = "30s"
/// half_open_probes = 3
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct CircuitConfig {
    /// Trip after this many failures in a row (`None`: never on that alone).
    pub consecutive_failures: Option<u32>,
    /// Trip when at least this share of the window's calls failed (0.0–1.0; `None`: never).
    pub failure_rate: Option<f64>,
    /// Trip when at least this share of the window's calls were slow (0.0–1.0; `None`: never).
    pub slow_call_rate: Option<f64>,
    /// A call slower than this is slow. For a stream this is the time to its first byte: a
    /// long answer is not a slow one.
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub slow_call_threshold: Duration,
    /// The calls the rates are computed over.
    pub window: Window,
    /// No rate trips the breaker before the window holds this many calls.
    pub minimum_calls: u32,
    /// How long the breaker stays open after its first trip.
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub open_duration: Duration,
    /// How much longer each further trip in a row keeps it open.
    pub backoff_multiplier: f64,
    /// The longest it stays open (a provider's `retry-after` is capped by it too).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub max_open_duration: Duration,
    /// The open duration varies by up to this share either way, so that a fleet's breakers do
    /// not probe in lockstep.
    pub jitter: f64,
    /// Probes admitted while half-open; all must succeed to close.
    pub half_open_probes: u32,
    /// Whether the provider's `retry-after` on the tripping failure sets the open duration.
    pub honour_retry_after: bool,
    /// Seeds the jitter.
    pub seed: u64,
    /// How new circuits behave (each can be changed later through a
    /// [`CircuitHandle`](crate::CircuitHandle)).
    pub mode: Mode,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            slow_call_rate: None,
            slow_call_threshold: Duration::from_secs(30),
            window: Window::Count(20),
            minimum_calls: 10,
            open_duration: Duration::from_secs(30),
            backoff_multiplier: 2.0,
            max_open_duration: Duration::from_secs(300),
            jitter: 0.1,
            half_open_probes: 3,
            honour_retry_after: true,
            seed: 0x5EED,
            mode: Mode::Normal,
        }
    }
}

impl CircuitConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// The first invalid field, by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = |value: Option<f64>, field: &'static str| match value {
            Some(r) if !(r > 0.0 && r <= 1.0) => {
                Err(ConfigError::new(field, r, "must be in (0, 1]"))
            }
            _ => Ok(()),
        };
        rate(self.failure_rate, "failure_rate")?;
        rate(self.slow_call_rate, "slow_call_rate")?;
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                0,
                "must be at least 1 (or unset)",
            ));
        }
        match self.window {
            Window::Count(0) | Window::Time(0) => {
                return Err(ConfigError::new(
                    "window",
                    0,
                    "must hold at least one call or second",
                ));
            }
            Window::Time(seconds) if seconds > 3_600 => {
                return Err(ConfigError::new(
                    "window",
                    seconds,
                    "a time window is at most 3600 s",
                ));
            }
            _ => {}
        }
        if self.half_open_probes == 0 || self.half_open_probes > 255 {
            return Err(ConfigError::new(
                "half_open_probes",
                self.half_open_probes,
                "must be between 1 and 255",
            ));
        }
        if self.open_duration.is_zero() || self.open_duration > self.max_open_duration {
            return Err(ConfigError::new(
                "open_duration",
                format!("{:?}", self.open_duration),
                "must be positive and at most max_open_duration",
            ));
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            return Err(ConfigError::new(
                "backoff_multiplier",
                self.backoff_multiplier,
                "must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(ConfigError::new("jitter", self.jitter, "must be in [0, 1)"));
        }
        Ok(())
    }

    /// How long to stay open after the `trips`-th trip in a row (1 for the first), before
    /// jitter; or the provider's wait when it gave one.
    pub(crate) fn open_for(
        &self,
        trips: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        if let Some(wait) = retry_after.filter(|_| self.honour_retry_after) {
            return wait.min(self.max_open_duration);
        }
        let grown = self.open_duration.as_secs_f64()
            * self
                .backoff_multiplier
                .powi(i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX));
        let capped = grown.min(self.max_open_duration.as_secs_f64());
        // `jitter` is a draw in [-1, 1).
        let jittered = capped * (1.0 + self.jitter * jitter);
        Duration::from_secs_f64(jittered.clamp(0.001, self.max_open_duration.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_durations_grow_cap_and_honour_the_provider() {
        let config = CircuitConfig {
            jitter: 0.0,
            ..CircuitConfig::default()
        };
        assert_eq!(config.open_for(1, None, 0.0), Duration::from_secs(30));
        assert_eq!(config.open_for(2, None, 0.0), Duration::from_secs(60));
        assert_eq!(config.open_for(10, None, 0.0), Duration::from_secs(300));
        assert_eq!(
            config.open_for(3, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        let jittered = CircuitConfig::default().open_for(1, None, -1.0);
        assert_eq!(jittered, Duration::from_secs(27));
    }

    #[test]
    fn bad_values_name_the_field() {
        let bad = [
            CircuitConfig {
                failure_rate: Some(1.5),
                ..CircuitConfig::default()
            },
            CircuitConfig {
                window: Window::Count(0),
                ..CircuitConfig::default()
            },
            CircuitConfig {
                half_open_probes: 0,
                ..CircuitConfig::default()
            },
            CircuitConfig {
                jitter: 1.0,
                ..CircuitConfig::default()
            },
        ];
        let fields = ["failure_rate", "window", "half_open_probes", "jitter"];
        for (config, field) in bad.iter().zip(fields) {
            assert_eq!(config.validate().unwrap_err().field(), field);
        }
        CircuitConfig::default().validate().unwrap();
    }
}
