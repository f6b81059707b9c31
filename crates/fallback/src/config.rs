//! [`FallbackConfig`]: when a call falls back, as data for config files.

use crate::layer::FallbackLayer;
use crate::policy::Triggers;

/// When a call falls back, and how its answer is marked. [`Default`]: the
/// [default triggers](Triggers::default) (overloaded, circuit open, rate limited, timeout,
/// connection failures, server errors; never an exhausted quota, a refused key or a bad
/// request), answers marked with the `x-tollgate-degraded` header.
///
/// With the `serde` feature it reads from TOML or JSON:
///
/// ```toml
/// triggers = ["circuit_open", "overloaded", "timeout"]
/// mark_header = true
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct FallbackConfig {
    /// The failures that fall back.
    pub triggers: Triggers,
    /// Whether a degraded answer carries the `x-tollgate-degraded` header (its [`Degraded`]
    /// extension is always there).
    ///
    /// [`Degraded`]: crate::Degraded
    pub mark_header: bool,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            triggers: Triggers::default(),
            mark_header: true,
        }
    }
}

impl<F> FallbackLayer<F> {
    /// Falls back to `fallback` as `config` says.
    pub fn configured(fallback: F, config: &FallbackConfig) -> Self {
        let layer = Self::new(fallback).with_policy(config.triggers);
        if config.mark_header {
            layer
        } else {
            layer.without_header()
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;
    use crate::Trigger;

    #[test]
    fn triggers_read_and_write_as_names() {
        let config: FallbackConfig =
            serde_json::from_str(r#"{"triggers": ["timeout", "circuit_open"]}"#).unwrap();
        assert!(config.triggers.contains(Trigger::Timeout));
        assert!(!config.triggers.contains(Trigger::Overloaded));
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(
            text,
            r#"{"triggers":["circuit_open","timeout"],"mark_header":true}"#
        );
        assert_eq!(
            serde_json::from_str::<FallbackConfig>(&text).unwrap(),
            config
        );
    }
}
