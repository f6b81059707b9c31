//! [`OverloadConfig`]: the overload layer's settings as data, for config files.

use tollgate_core::config::ConfigError;

use crate::algorithm::Aimd;
use crate::layer::OverloadLayer;

/// The overload layer's settings: whether the concurrency limit adapts to what the provider
/// takes (AIMD: up by one a round trip while calls succeed, down 10 % on an overload), and
/// its bounds. [`Default`]: adaptive from 4 calls, between 1 and 1,000.
///
/// With the `serde` feature it reads from TOML or JSON:
///
/// ```toml
/// adaptive = true
/// initial_limit = 4
/// min_limit = 1
/// max_limit = 50
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct OverloadConfig {
    /// Whether the limit adapts (false: it stays at `max_limit`, and overloads are still
    /// detected and throttled).
    pub adaptive: bool,
    /// The limit to start from (at most `max_limit`).
    pub initial_limit: usize,
    /// The lowest the limit goes.
    pub min_limit: usize,
    /// The highest the limit goes.
    pub max_limit: usize,
    /// Seeds the throttle's draws, for repeatable runs.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub seed: Option<u64>,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            adaptive: true,
            initial_limit: 4,
            min_limit: 1,
            max_limit: 1000,
            seed: None,
        }
    }
}

impl OverloadConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not, by field name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_limit == 0 {
            return Err(ConfigError::new("min_limit", 0, "must be at least 1"));
        }
        if self.max_limit < self.min_limit {
            return Err(ConfigError::new(
                "max_limit",
                self.max_limit,
                format!("is below min_limit ({})", self.min_limit),
            ));
        }
        if self.initial_limit == 0 {
            return Err(ConfigError::new("initial_limit", 0, "must be at least 1"));
        }
        Ok(())
    }

    /// The limit algorithm these settings describe.
    pub fn algorithm(&self) -> Aimd {
        if self.adaptive {
            Aimd::new()
                .with_initial(self.initial_limit.min(self.max_limit))
                .with_bounds(self.min_limit, self.max_limit)
        } else {
            Aimd::new()
                .with_initial(self.max_limit)
                .with_bounds(self.max_limit, self.max_limit)
        }
    }
}

impl OverloadLayer {
    /// The overload layer with `config`.
    ///
    /// # Errors
    ///
    /// A setting that is not usable ([`OverloadConfig::validate`]).
    pub fn configured(config: &OverloadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let layer = Self::new().with_algorithm(config.algorithm());
        Ok(match config.seed {
            Some(seed) => layer.with_seed(seed),
            None => layer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_and_a_fixed_limit_stays_at_its_maximum() {
        OverloadLayer::configured(&OverloadConfig::default()).unwrap();
        let error = OverloadConfig {
            min_limit: 5,
            max_limit: 2,
            ..OverloadConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.to_string(), "max_limit: 2 is below min_limit (5)");
        let fixed = OverloadConfig {
            adaptive: false,
            max_limit: 7,
            ..OverloadConfig::default()
        };
        assert_eq!(
            format!("{:?}", fixed.algorithm()),
            format!("{:?}", Aimd::new().with_initial(7).with_bounds(7, 7))
        );
    }
}
