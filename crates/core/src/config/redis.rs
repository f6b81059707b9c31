//! [`RedisSettings`]: where a fleet keeps what its replicas share.

/// Where a fleet keeps what its replicas share (rate limits, the cache's second level): a
/// Redis server, named by the environment variable holding its URL. A URL can carry a
/// password, so it is never written in a config file.
///
/// ```toml
/// url_env = "REDIS_URL"     # redis://host:6379/0
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// The environment variable holding the Redis URL (`redis://host:6379/0`).
    pub url_env: String,
}

impl RedisSettings {
    /// Checks the variable is named.
    ///
    /// # Errors
    ///
    /// An empty name.
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        if self.url_env.trim().is_empty() {
            return Err(super::ConfigError::invalid(
                "url_env",
                "is empty; name the environment variable that holds the Redis URL",
            ));
        }
        Ok(())
    }
}
