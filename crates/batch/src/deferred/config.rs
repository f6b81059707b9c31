//! [`DeferredConfig`], from code or from the seeds' environment variables.

use std::time::Duration;

/// When the queue sends its jobs, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredConfig {
    /// Whether jobs wait for a flush at all (`USE_BATCHED_CLIENT`); when not, each is sent at
    /// once — still written first, so still recovered after a crash (default: true).
    pub deferred: bool,
    /// Time between flushes (`BATCH_INTERVAL_HOURS`; default 1 h).
    pub interval: Duration,
    /// Jobs per flush at most (`MAX_BATCH_SIZE`; default 1,000).
    pub max_batch_size: usize,
    /// A job waits at most this long for a flush before it is sent alone, unless its own max
    /// age says otherwise (default 5 min).
    pub max_age: Duration,
    /// How often a submitted batch is polled (default 30 s).
    pub poll_interval: Duration,
    /// Plain calls in flight at once (default 16).
    pub concurrency: usize,
    /// A job left unrun by this many batches (expired, cancelled) is sent alone as a plain call
    /// instead (default 3).
    pub max_attempts: u32,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        Self {
            deferred: true,
            interval: Duration::from_secs(3600),
            max_batch_size: 1_000,
            max_age: Duration::from_secs(300),
            poll_interval: Duration::from_secs(30),
            concurrency: 16,
            max_attempts: 3,
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
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `var`.
    ///
    /// # Errors
    ///
    /// A variable that is set but cannot be read.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self::default();
        if let Some(value) = var("USE_BATCHED_CLIENT") {
            config.deferred = match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(format!(
                        "USE_BATCHED_CLIENT={value:?}: expected true or false"
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
                    format!("BATCH_INTERVAL_HOURS={value:?}: expected a positive number of hours")
                })?;
            config.interval = Duration::from_secs_f64(hours * 3600.0);
        }
        if let Some(value) = var("MAX_BATCH_SIZE") {
            config.max_batch_size = value
                .trim()
                .parse()
                .ok()
                .filter(|n: &usize| *n > 0)
                .ok_or_else(|| format!("MAX_BATCH_SIZE={value:?}: expected a positive integer"))?;
        }
        Ok(config)
    }

    /// Checks every setting is usable.
    ///
    /// # Errors
    ///
    /// The first setting that is not.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() || self.poll_interval.is_zero() {
            return Err("the flush and poll intervals must be positive".into());
        }
        if self.max_batch_size == 0 || self.concurrency == 0 || self.max_attempts == 0 {
            return Err("max_batch_size, concurrency and max_attempts must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_variables_set_the_config() {
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
            bad.unwrap_err(),
            "MAX_BATCH_SIZE=\"lots\": expected a positive integer"
        );
        let off = DeferredConfig::from_vars(|n| (n == "USE_BATCHED_CLIENT").then(|| "0".into()));
        assert!(!off.unwrap().deferred);
    }
}
