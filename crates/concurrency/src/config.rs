//! [`ConcurrencyConfig`]: the concurrency limit's settings as data, for config files.

use std::time::Duration;

use tollgate_core::config::ConfigError;

use crate::layer::ConcurrencyLimitLayer;

/// The concurrency limit's settings. [`Default`]: 10 calls in flight, callers queue without
/// a limit of their own (their deadline still holds).
///
/// With the `serde` feature it reads from TOML or JSON:
///
/// ```toml
/// max_in_flight = 10
/// queue_timeout = "30s"
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ConcurrencyConfig {
    /// Calls in flight at most; the permit is held until the response body ends.
    pub max_in_flight: usize,
    /// The longest a call waits for a permit before it fails with `QueueTimeout` (none: it
    /// waits its turn).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "tollgate_core::config::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub queue_timeout: Option<Duration>,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 10,
            queue_timeout: None,
        }
    }
}

impl ConcurrencyConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not, by field name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_in_flight == 0 {
            return Err(ConfigError::new(
                "max_in_flight",
                0,
                "must be at least 1; leave the layer out for no limit",
            ));
        }
        if self.queue_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "queue_timeout",
                "0s",
                "must be positive; leave it out for none",
            ));
        }
        Ok(())
    }
}

impl ConcurrencyLimitLayer {
    /// The limit with `config`.
    ///
    /// # Errors
    ///
    /// A setting that is not usable ([`ConcurrencyConfig::validate`]).
    pub fn configured(config: &ConcurrencyConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let layer = Self::new(config.max_in_flight);
        Ok(match config.queue_timeout {
            Some(timeout) => layer.with_queue_timeout(timeout),
            None => layer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_calls_in_flight_is_refused_by_name() {
        assert!(ConcurrencyLimitLayer::configured(&ConcurrencyConfig::default()).is_ok());
        let error = ConcurrencyConfig {
            max_in_flight: 0,
            ..ConcurrencyConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.field(), "max_in_flight");
    }
}
