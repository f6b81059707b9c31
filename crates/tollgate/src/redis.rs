//! [`RedisUnavailable`]: a Redis server the config names did not answer.

use tollgate_core::BoxError;
use tollgate_core::config::RedisSettings;

use crate::config::StackConfig;

/// The Redis server a section names (`[redis]`, `rate_limit.redis`, `cache.redis`) did not
/// answer.
#[derive(Debug)]
pub struct RedisUnavailable {
    field: String,
    server: String,
    source: BoxError,
}

impl RedisUnavailable {
    #[cfg_attr(
        not(any(
            feature = "ratelimit-redis",
            feature = "cache-redis",
            feature = "budget-redis",
            feature = "circuit-redis",
            feature = "pool-redis"
        )),
        allow(dead_code)
    )]
    pub(crate) fn new(field: String, settings: &RedisSettings, source: BoxError) -> Self {
        Self {
            field,
            server: settings.describe(),
            source,
        }
    }
}

impl std::fmt::Display for RedisUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot connect to the Redis server of {} ({}); \
             check it is running and the URL is right",
            self.field, self.server
        )
    }
}

impl std::error::Error for RedisUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The first section kept in Redis, which needs [`LlmStack::connect`].
pub(crate) fn redis_field(config: &StackConfig) -> Option<String> {
    if config.rate_limit_redis().is_some() {
        Some(config.redis_field("rate_limit"))
    } else if config.cache_redis().is_some() {
        Some(config.redis_field("cache"))
    } else if config.budget_redis().is_some()
        || config.circuit_redis().is_some()
        || config.pool_redis().is_some()
    {
        Some("redis".to_owned())
    } else {
        None
    }
}
