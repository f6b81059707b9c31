//! [`RedisUnavailable`]: a Redis server the config names did not answer.

use tollgate_core::BoxError;
use tollgate_core::config::RedisSettings;

use crate::config::StackConfig;

/// The Redis server a section names (`rate_limit.redis`, `cache.redis`) did not answer.
#[derive(Debug)]
pub struct RedisUnavailable {
    section: &'static str,
    url_env: String,
    source: BoxError,
}

impl RedisUnavailable {
    #[cfg_attr(
        not(any(feature = "ratelimit-redis", feature = "cache-redis")),
        allow(dead_code)
    )]
    pub(crate) fn new(section: &'static str, settings: &RedisSettings, source: BoxError) -> Self {
        Self {
            section,
            url_env: settings.url_env.clone(),
            source,
        }
    }
}

impl std::fmt::Display for RedisUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot connect to the Redis server of {} (the URL in {}); \
             check it is running and the URL is right",
            self.section, self.url_env
        )
    }
}

impl std::error::Error for RedisUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The Redis URL `settings` names, read through `env`; `field` is the setting that names it.
#[cfg(any(feature = "ratelimit-redis", feature = "cache-redis"))]
pub(crate) fn redis_url(
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    field: &'static str,
    settings: &RedisSettings,
) -> Result<String, tollgate_core::config::ConfigError> {
    env(&settings.url_env).ok_or_else(|| {
        tollgate_core::config::ConfigError::invalid(
            field,
            format!(
                "the environment variable {:?} is not set; it holds the Redis URL",
                settings.url_env
            ),
        )
    })
}

/// The first section kept in Redis, which needs [`LlmStack::connect`].
pub(crate) fn redis_field(config: &StackConfig) -> Option<&'static str> {
    if config
        .rate_limit
        .as_ref()
        .is_some_and(|r| r.redis.is_some())
    {
        Some("rate_limit.redis")
    } else if config.cache.as_ref().is_some_and(|c| c.redis.is_some()) {
        Some("cache.redis")
    } else {
        None
    }
}
