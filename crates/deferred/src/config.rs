//! [`DeferredConfig`], from code, a config file, or environment variables (`USE_BATCHED_CLIENT`,
//! `BATCH_INTERVAL_HOURS`, `MAX_BATCH_SIZE`).

use std::time::Duration;

use tollgate_core::config::ConfigError;

/// When the queue sends its jobs, how, and how long it keeps them.
///
/// With feature `serde` it loads from a config file, durations human-readable (`"24h"`,
/// `"30s"`), every field optional:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use std::time::Duration;
/// use tollgate_deferred::DeferredConfig;
///
/// let config: DeferredConfig =
///     serde_json::from_str(r#"{"interval": "30m", "retention": "7d"}"#).unwrap();
/// assert_eq!(config.retention, Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(config.max_batch_size, 1_000);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct DeferredConfig {
    /// Where the jobs are kept (a redb file), for a queue opened from its config
    /// ([`DeferredQueue::configured`](crate::DeferredQueue::configured)).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub store: Option<std::path::PathBuf>,
    /// Whether jobs wait for a flush at all (`USE_BATCHED_CLIENT`); when not, each is sent at
    /// once — still written first, so still recovered after a crash (default: true).
    pub deferred: bool,
    /// Time between flushes (`BATCH_INTERVAL_HOURS`; default 1 h).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub interval: Duration,
    /// Jobs per flush at most (`MAX_BATCH_SIZE`; default 1,000).
    pub max_batch_size: usize,
    /// A job waits at most this long for a flush before it is sent alone, unless its own max
    /// age says otherwise (default 5 min).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub max_age: Duration,
    /// How often a submitted batch is polled (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub poll_interval: Duration,
    /// Plain calls in flight at once (default 16).
    pub concurrency: usize,
    /// A job left unrun by this many batches (expired, cancelled) is sent alone as a plain call
    /// instead (default 3).
    pub max_attempts: u32,
    /// How long a job is kept once it has ended — answered or failed, its answer collected or
    /// not — before it is deleted with its request and answer (default 24 h). Its answer can
    /// be read until then; after it, [`status`](super::DeferredQueue::status) finds no such job,
    /// and a key it was submitted with names no job any more (submitting that key again queues
    /// a new job).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub retention: Duration,
    /// Bytes of answers kept in memory while the store refuses to write them (a full disk),
    /// retried with backoff until it takes them (default 64 MiB). Past it, a plain call's job
    /// goes back to pending and is sent again, and a batch's results are read again from the
    /// provider: both cost another upstream call or read rather than memory the process may
    /// not have. 0 keeps no answer in memory.
    pub max_unwritten_bytes: usize,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        Self {
            store: None,
            deferred: true,
            interval: Duration::from_secs(3600),
            max_batch_size: 1_000,
            max_age: Duration::from_secs(300),
            poll_interval: Duration::from_secs(30),
            concurrency: 16,
            max_attempts: 3,
            retention: Duration::from_secs(24 * 3600),
            max_unwritten_bytes: 64 << 20,
        }
    }
}

impl DeferredConfig {
    /// The defaults, overridden by `USE_BATCHED_CLIENT` (`true`/`false`/`1`/`0`),
    /// `BATCH_INTERVAL_HOURS` (a number, fractions allowed) and `MAX_BATCH_SIZE`.
    ///
    /// # Errors
    ///
    /// A variable that is set but cannot be read, naming it and its value.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `var`.
    ///
    /// # Errors
    ///
    /// A variable that is set but cannot be read.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::default().with_vars(var)
    }

    /// These settings, overridden by `USE_BATCHED_CLIENT`, `BATCH_INTERVAL_HOURS` and
    /// `MAX_BATCH_SIZE` where `var` has them.
    ///
    /// # Errors
    ///
    /// A variable that is set but cannot be read.
    pub fn with_vars(self, var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = self;
        if let Some(value) = var("USE_BATCHED_CLIENT") {
            config.deferred = match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::new(
                        "USE_BATCHED_CLIENT",
                        format!("{value:?}"),
                        "must be true or false",
                    ));
                }
            };
        }
        if let Some(value) = var("BATCH_INTERVAL_HOURS") {
            let hours: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|h: &f64| h.is_finite() && *h > 0.0)
                .ok_or_else(|| {
                    ConfigError::new(
                        "BATCH_INTERVAL_HOURS",
                        format!("{value:?}"),
                        "must be a positive number of hours",
                    )
                })?;
            config.interval = Duration::from_secs_f64(hours * 3600.0);
        }
        if let Some(value) = var("MAX_BATCH_SIZE") {
            config.max_batch_size = value
                .trim()
                .parse()
                .ok()
                .filter(|n: &usize| *n > 0)
                .ok_or_else(|| {
                    ConfigError::new(
                        "MAX_BATCH_SIZE",
                        format!("{value:?}"),
                        "must be a positive whole number",
                    )
                })?;
        }
        Ok(config)
    }

    /// Checks every setting is usable.
    ///
    /// # Errors
    ///
    /// The first setting that is not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("interval", self.interval),
            ("poll_interval", self.poll_interval),
            ("retention", self.retention),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(field, "0s", "must be positive"));
            }
        }
        for (field, value) in [
            ("max_batch_size", self.max_batch_size),
            ("concurrency", self.concurrency),
            ("max_attempts", self.max_attempts as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, 0, "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_variables_set_the_config() {
        let vars = |name: &str| match name {
            "USE_BATCHED_CLIENT" => Some("true".to_owned()),
            "BATCH_INTERVAL_HOURS" => Some("0.5".to_owned()),
            "MAX_BATCH_SIZE" => Some("250".to_owned()),
            _ => None,
        };
        let config = DeferredConfig::from_vars(vars).unwrap();
        assert!(config.deferred);
        assert_eq!(config.interval, Duration::from_secs(1800));
        assert_eq!(config.max_batch_size, 250);
        assert_eq!(
            DeferredConfig::from_vars(|_| None).unwrap(),
            DeferredConfig::default()
        );
        let bad = DeferredConfig::from_vars(|n| (n == "MAX_BATCH_SIZE").then(|| "lots".into()));
        assert_eq!(
            bad.unwrap_err().to_string(),
            "MAX_BATCH_SIZE: \"lots\" must be a positive whole number"
        );
        let off = DeferredConfig::from_vars(|n| (n == "USE_BATCHED_CLIENT").then(|| "0".into()));
        assert!(!off.unwrap().deferred);
    }

    #[test]
    fn retention_must_be_positive() {
        assert_eq!(
            DeferredConfig::default().retention,
            Duration::from_secs(86_400)
        );
        let config = DeferredConfig {
            retention: Duration::ZERO,
            ..DeferredConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "retention: 0s must be positive"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn loads_with_human_readable_durations() {
        let config: DeferredConfig = serde_json::from_str(
            r#"{"retention": "36h", "poll_interval": "10s", "max_unwritten_bytes": 1024}"#,
        )
        .unwrap();
        assert_eq!(config.retention, Duration::from_secs(36 * 3600));
        assert_eq!(config.poll_interval, Duration::from_secs(10));
        assert_eq!(config.max_unwritten_bytes, 1024);
        assert_eq!(config.interval, DeferredConfig::default().interval);
        let unknown = serde_json::from_str::<DeferredConfig>(r#"{"retain": "1h"}"#);
        assert!(unknown.is_err());
    }
}
