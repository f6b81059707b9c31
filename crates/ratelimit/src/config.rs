//! [`RateLimitConfig`]: the rate limiter's settings as data, for config files.

use std::collections::BTreeMap;
use std::time::Duration;

use tollgate_core::config::ConfigError;
pub use tollgate_core::config::RedisSettings;

use crate::layer::RateLimitLayer;
use crate::memory::MemoryStore;
use crate::quota::{QuotaTable, Quotas, ScopeMatch};
use crate::store::Store;

/// The rate limiter's settings: the quotas of every scope, those of particular models, and
/// how limits nobody configured are found. [`Default`]: no configured quota, limits kept per
/// model and learned (from the provider's headers, or from its 429s when it sends none).
///
/// With the `serde` feature it reads from TOML or JSON:
///
/// ```toml
/// [quotas]                      # every scope
/// requests_per_minute = 500
/// tokens_per_minute = 200000
/// [models."gpt-4o-mini".quotas] # one model's own
/// requests_per_minute = 120
/// [redis]                       # a fleet shares the limits (feature `redis`)
/// url_env = "REDIS_URL"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RateLimitConfig {
    /// The quotas of every scope (unset dimensions are unlimited, or learned).
    pub quotas: Quotas,
    /// Models with quotas of their own, by model name.
    pub models: BTreeMap<String, ModelLimits>,
    /// Whether each model of a key has its own limits (OpenAI, Anthropic and Gemini limit
    /// per model), or all the models of a key share them (a gateway or self-hosted server
    /// that limits per key).
    pub per_model: bool,
    /// Whether limits nobody configured are learned: from the provider's rate-limit headers,
    /// or, when it sends none, as a pace from its 429s.
    pub learn: bool,
    /// The longest a request waits for capacity before it fails with `RateLimited` (none:
    /// requests wait their turn, within their deadline).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "tollgate_core::config::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_wait: Option<Duration>,
    /// Limits kept in Redis and shared by every replica (the `redis` feature), instead of in
    /// this process's memory.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub redis: Option<RedisSettings>,
}

/// One model's own limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ModelLimits {
    /// Its quotas, in place of the default ones.
    pub quotas: Quotas,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            quotas: Quotas::unlimited(),
            models: BTreeMap::new(),
            per_model: true,
            learn: true,
            max_wait: None,
            redis: None,
        }
    }
}

impl RateLimitConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not, by field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_quotas(&self.quotas).map_err(|e| e.within("quotas"))?;
        for (model, limits) in &self.models {
            if model.is_empty() {
                return Err(ConfigError::invalid("models", "a model name is empty"));
            }
            check_quotas(&limits.quotas)
                .map_err(|e| e.within("quotas").within(&format!("models.{model}")))?;
        }
        if let Some(redis) = &self.redis {
            redis.validate().map_err(|e| e.within("redis"))?;
        }
        Ok(())
    }

    /// The quotas of every scope: the default, and each model's own.
    pub fn table(&self) -> QuotaTable {
        self.table_with([])
    }

    /// As [`table`](Self::table), with `first` overrides ahead of the models' (a key's own
    /// quotas, say).
    pub fn table_with(&self, first: impl IntoIterator<Item = (ScopeMatch, Quotas)>) -> QuotaTable {
        let table = first
            .into_iter()
            .fold(QuotaTable::new(self.quotas), |table, (matcher, quotas)| {
                table.with(matcher, quotas)
            });
        self.models.iter().fold(table, |table, (model, limits)| {
            table.with(ScopeMatch::model(model.as_str()), limits.quotas)
        })
    }

    /// These settings on a layer over `store` (whose quota table the caller built from
    /// [`table`](Self::table)).
    pub fn apply<St: Store>(&self, layer: RateLimitLayer<St>) -> RateLimitLayer<St> {
        let layer = layer
            .with_per_model_limits(self.per_model)
            .with_learning(self.learn)
            .with_header_sync(self.learn);
        match self.max_wait {
            Some(wait) => layer.with_max_wait(wait),
            None => layer,
        }
    }
}

fn check_quotas(quotas: &Quotas) -> Result<(), ConfigError> {
    if let Some(interval) = quotas.min_interval
        && (interval.is_zero() || u64::try_from(interval.as_nanos()).is_err())
    {
        return Err(ConfigError::new(
            "min_interval",
            tollgate_core::config::duration::format(interval),
            "must be positive and under 584 years; leave it out for none",
        ));
    }
    Ok(())
}

impl RateLimitLayer<MemoryStore> {
    /// The rate limiter with `config`, its limits in this process's memory (a config naming
    /// Redis is built with a `RedisStore` and [`RateLimitConfig::apply`]).
    ///
    /// # Errors
    ///
    /// A setting that is not usable ([`RateLimitConfig::validate`]).
    pub fn configured(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(config.apply(Self::with_table(config.table())))
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use tollgate_core::{Provider, Scope};

    use super::*;
    use crate::quota::Dimension;

    #[test]
    fn models_get_their_own_quotas() {
        let mut config = RateLimitConfig {
            quotas: Quotas::per_minute(60, 0),
            ..RateLimitConfig::default()
        };
        config.models.insert(
            "fast".into(),
            ModelLimits {
                quotas: Quotas::per_minute(120, 0),
            },
        );
        let table = config.table();
        let fast = Scope::new(Provider::OpenAi).with_model(Some("fast".into()));
        let other = Scope::new(Provider::OpenAi).with_model(Some("slow".into()));
        assert_eq!(
            table.quotas_for(&fast).requests_per_minute,
            NonZeroU64::new(120)
        );
        assert_eq!(
            table
                .quotas_for(&other)
                .get(Dimension::Requests)
                .unwrap()
                .limit(),
            60
        );
        RateLimitLayer::configured(&config).unwrap();
    }

    #[test]
    fn a_zero_interval_names_its_model() {
        let mut config = RateLimitConfig::default();
        config.models.insert(
            "m".into(),
            ModelLimits {
                quotas: Quotas {
                    min_interval: Some(Duration::ZERO),
                    ..Quotas::unlimited()
                },
            },
        );
        let error = config.validate().unwrap_err();
        assert_eq!(error.field(), "models.m.quotas.min_interval");
    }
}
