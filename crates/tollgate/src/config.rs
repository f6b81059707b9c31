//! [`StackConfig`]: the stack's settings, one section per layer, from a preset, code, or a
//! TOML or JSON file.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_batch::BatchConfig;
use tollgate_cache::CacheConfig;
use tollgate_circuit::CircuitConfig;
use tollgate_concurrency::ConcurrencyConfig;
pub use tollgate_core::config::ConfigError;
use tollgate_core::config::RedisSettings;
use tollgate_fallback::FallbackConfig;
use tollgate_overload::OverloadConfig;
use tollgate_pool::PoolConfig;
use tollgate_ratelimit::RateLimitConfig;
use tollgate_retry::RetryConfig;
use tollgate_timeout::TimeoutConfig;

use crate::compat;
use crate::preset::Preset;

/// A key that was read but cannot be honoured as written, and why (see
/// [`StackConfig::warnings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    field: String,
    message: String,
}

impl ConfigWarning {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The key as written.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What it was taken to mean, or why it is ignored.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The stack's settings: one section per layer, each the layer's own config type. A section
/// that is `None` leaves its layer out of the stack.
///
/// A file names a [`Preset`] (balanced by default) and sets what differs from it, key by key.
/// It may also use the keys other tools' config files use — `max_requests_per_minute`,
/// `max_concurrent_requests`, `circuit_breaker.failure_threshold`, `backoff_strategy.*`,
/// `min_delay_between_calls` and more (`docs/config.md` lists them all): each is read as
/// the key that does the same thing here, and one that cannot be honoured is reported in
/// [`warnings`](Self::warnings), never silently dropped.
///
/// ```
/// use std::time::Duration;
///
/// let config = tollgate::StackConfig::from_toml(r#"
///     preset = "conservative"
///     max_requests_per_minute = 60        # = rate_limit.quotas.requests_per_minute
///     [circuit_breaker]
///     failure_threshold = 3               # = consecutive_failures
///     recovery_timeout = "45s"            # = open_duration
///     [retry]
///     initial_delay = 1
///     max_delay = "60s"
///     [cache]
///     enabled = false                     # no cache layer at all
/// "#).unwrap();
/// let rate_limit = config.rate_limit.as_ref().unwrap();
/// assert_eq!(rate_limit.quotas.requests_per_minute.unwrap().get(), 60);
/// let breaker = config.circuit_breaker.as_ref().unwrap();
/// assert_eq!(breaker.open_duration, Duration::from_secs(45));
/// assert_eq!(config.concurrency.as_ref().unwrap().max_in_flight, 1, "from the preset");
/// assert!(config.cache.is_none());
/// ```
///
/// [`Default`] is the balanced preset, as an empty file gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct StackConfig {
    /// Seeds every random choice (retry and breaker jitter, throttling draws), for repeatable
    /// runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Scopes (provider, key, model) each layer keeps state for at most: idle ones are
    /// forgotten to make room, so a flood of made-up models or keys cannot grow memory
    /// without bound (default 10,000).
    pub max_scopes: usize,
    /// Requests and tokens per period: configured, or learned.
    pub rate_limit: Option<RateLimitConfig>,
    /// Calls in flight at most.
    pub concurrency: Option<ConcurrencyConfig>,
    /// The adaptive limit and overload detection, per key and model.
    pub overload: Option<OverloadConfig>,
    /// Retries, their backoff and one deadline per request.
    pub retry: Option<RetryConfig>,
    /// The breaker of each key and model.
    pub circuit_breaker: Option<CircuitConfig>,
    /// The deadlines of each attempt: first byte, idle, total.
    pub timeouts: Option<TimeoutConfig>,
    /// The response cache (deterministic requests and embeddings).
    pub cache: Option<CacheConfig>,
    /// Budgets in dollars and tokens, per tenant, model or overall, with the prices calls
    /// are charged at (none: calls are neither priced nor limited by spend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<tollgate_budget::BudgetConfig>,
    /// Micro-batching of embeddings.
    pub batch: Option<BatchConfig>,
    /// Many keys, deployments and providers behind one service, each with its own breaker,
    /// adaptive limit, rate limits and concurrency limit (none: requests go where they are
    /// addressed, with the caller's key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolConfig>,
    /// Answers when the upstream fails (overloaded, breaker open, timeouts, ...): from the
    /// cache's stale entries, up to `cache.max_staleness` old, or from a service given to
    /// [`LlmStack::with_fallback`](crate::LlmStack::with_fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
    /// The Redis (or Valkey) server a fleet of replicas shares its state through: with it, the
    /// rate limits, the cache's second level and the budgets are kept there (a section's own
    /// `redis` wins over it); without it, each process keeps its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSettings>,
    /// The durable deferred queue: requests stored on disk and sent in bulk at intervals
    /// ([`LlmStack::deferred_queue`](crate::LlmStack::deferred_queue); feature `deferred`).
    #[cfg(feature = "deferred")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred: Option<tollgate_deferred::DeferredConfig>,
    #[serde(skip)]
    warnings: Vec<ConfigWarning>,
}

/// The sections, in the order of the stack (outermost first).
pub(crate) const SECTIONS: [&str; 13] = [
    "deferred",
    "fallback",
    "cache",
    "budget",
    "batch",
    "retry",
    "circuit_breaker",
    "overload",
    "rate_limit",
    "concurrency",
    "timeouts",
    "pool",
    "redis",
];

impl Default for StackConfig {
    fn default() -> Self {
        Self::preset(Preset::Balanced)
    }
}

impl StackConfig {
    /// Every layer with its own defaults, before any preset.
    fn layer_defaults() -> Self {
        Self {
            seed: None,
            max_scopes: tollgate_core::DEFAULT_MAX_SCOPES,
            rate_limit: Some(RateLimitConfig::default()),
            concurrency: Some(ConcurrencyConfig::default()),
            overload: Some(OverloadConfig::default()),
            retry: Some(RetryConfig::default()),
            circuit_breaker: Some(CircuitConfig::default()),
            timeouts: Some(TimeoutConfig::default()),
            cache: Some(CacheConfig::default()),
            batch: Some(BatchConfig::default()),
            budget: None,
            pool: None,
            fallback: None,
            redis: None,
            #[cfg(feature = "deferred")]
            deferred: None,
            warnings: Vec::new(),
        }
    }

    /// The settings `preset` gives.
    pub fn preset(preset: Preset) -> Self {
        let mut doc = Map::new();
        doc.insert("preset".into(), Value::from(preset.name()));
        Self::from_value(Value::Object(doc)).expect("every preset is a valid config")
    }

    /// Parses TOML.
    ///
    /// # Errors
    ///
    /// A key that is unknown, of the wrong type, or out of range: its full path, the value,
    /// why, and its line.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_at(text, span.start));
            ConfigError::invalid("", e.message().to_owned()).at_line(line)
        })?;
        let value =
            serde_json::to_value(doc).map_err(|e| ConfigError::invalid("", e.to_string()))?;
        Self::from_value(value).map_err(|e| e.located_in(text))
    }

    /// Parses JSON.
    ///
    /// # Errors
    ///
    /// As [`from_toml`](Self::from_toml), without lines past the syntax.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::invalid("", e.to_string()).at_line(Some(e.line())))?;
        Self::from_value(value)
    }

    /// Reads a `.json` file as JSON, any other as TOML.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or as [`from_toml`](Self::from_toml), naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::invalid("", e.to_string()).in_file(path))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        };
        parsed.map_err(|e| e.in_file(path))
    }

    /// Reads a config already parsed (a table of a larger file, say): the preset it names,
    /// with its keys laid over.
    ///
    /// # Errors
    ///
    /// As [`from_toml`](Self::from_toml), without lines.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        let Value::Object(mut doc) = value else {
            return Err(ConfigError::new("", value, "must be a table of settings"));
        };
        let preset = match doc.remove("preset") {
            None => Preset::default(),
            Some(value) => Preset::deserialize(&value).map_err(|_| {
                ConfigError::new(
                    "preset",
                    &value,
                    "is not a preset; use \"conservative\", \"balanced\" or \"aggressive\"",
                )
            })?,
        };
        let mut warnings = Vec::new();
        let normalized = compat::normalize(&mut doc, &mut warnings)?;
        let sets_max_open = doc
            .get("circuit_breaker")
            .and_then(Value::as_object)
            .is_some_and(|c| c.contains_key("max_open_duration"));
        let mut merged = match serde_json::to_value(Self::layer_defaults()) {
            Ok(Value::Object(merged)) => merged,
            _ => unreachable!("a config serializes to a table"),
        };
        let mut base: Map<String, Value> =
            toml::from_str(preset.toml()).expect("every preset parses");
        compat::normalize(&mut base, &mut Vec::new())?;
        merge(&mut merged, base);
        merge(&mut merged, doc);
        let as_written = |e: ConfigError| match normalized.as_written(e.field()) {
            Some(field) => e.with_field(field),
            None => e,
        };
        let mut config = Self::from_canonical(merged).map_err(as_written)?;
        if normalized.no_burst {
            compat::spread(&mut config, &mut warnings);
        }
        // A longer first open period than the longest allowed raises the longest, unless
        // that was set too.
        if let Some(circuit) = &mut config.circuit_breaker
            && !sets_max_open
        {
            circuit.max_open_duration = circuit.max_open_duration.max(circuit.open_duration);
        }
        config.warnings = warnings;
        config.validate().map_err(as_written)?;
        Ok(config)
    }

    /// Reads each section as its layer's config.
    fn from_canonical(doc: Map<String, Value>) -> Result<Self, ConfigError> {
        let mut config = Self {
            seed: None,
            max_scopes: tollgate_core::DEFAULT_MAX_SCOPES,
            rate_limit: None,
            concurrency: None,
            overload: None,
            retry: None,
            circuit_breaker: None,
            timeouts: None,
            cache: None,
            batch: None,
            budget: None,
            pool: None,
            fallback: None,
            redis: None,
            #[cfg(feature = "deferred")]
            deferred: None,
            warnings: Vec::new(),
        };
        for (key, value) in doc {
            match key.as_str() {
                "seed" => config.seed = section(&key, value)?,
                "max_scopes" => config.max_scopes = section(&key, value)?,
                "rate_limit" => config.rate_limit = section(&key, value)?,
                "concurrency" => config.concurrency = section(&key, value)?,
                "overload" => config.overload = section(&key, value)?,
                "retry" => config.retry = section(&key, value)?,
                "circuit_breaker" => config.circuit_breaker = section(&key, value)?,
                "timeouts" => config.timeouts = section(&key, value)?,
                "cache" => config.cache = section(&key, value)?,
                "batch" => config.batch = section(&key, value)?,
                "budget" => config.budget = section(&key, value)?,
                "pool" => config.pool = section(&key, value)?,
                "fallback" => config.fallback = section(&key, value)?,
                "redis" => config.redis = section(&key, value)?,
                #[cfg(feature = "deferred")]
                "deferred" => config.deferred = section(&key, value)?,
                #[cfg(not(feature = "deferred"))]
                "deferred" => {
                    return Err(ConfigError::invalid(
                        key,
                        "the deferred queue needs tollgate's `deferred` feature",
                    ));
                }
                _ => {
                    return Err(ConfigError::invalid(
                        key,
                        format!(
                            "is not a setting; expected preset, seed, max_scopes, one of the sections {} \
                             or a key docs/config.md lists",
                            SECTIONS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Checks every section is usable.
    ///
    /// # Errors
    ///
    /// The first value that is not, by its full path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check<T>(
            name: &str,
            section: Option<&T>,
            validate: impl Fn(&T) -> Result<(), ConfigError>,
        ) -> Result<(), ConfigError> {
            section.map_or(Ok(()), |s| validate(s).map_err(|e| e.within(name)))
        }
        #[cfg(not(feature = "ratelimit-redis"))]
        if self.rate_limit_redis().is_some() {
            return Err(ConfigError::invalid(
                self.redis_field("rate_limit"),
                "needs tollgate's `ratelimit-redis` feature",
            ));
        }
        #[cfg(not(feature = "cache-redis"))]
        if self.cache_redis().is_some() {
            return Err(ConfigError::invalid(
                self.redis_field("cache"),
                "needs tollgate's `cache-redis` feature",
            ));
        }
        #[cfg(not(feature = "pool-redis"))]
        if self.pool_redis().is_some() {
            return Err(ConfigError::invalid(
                "redis",
                "is where a fleet shares its pool's cooldowns, which needs tollgate's \
                 `pool-redis` feature",
            ));
        }
        #[cfg(not(feature = "circuit-redis"))]
        if self.circuit_redis().is_some() {
            return Err(ConfigError::invalid(
                "redis",
                "is where a fleet shares its breakers, which needs tollgate's `circuit-redis` \
                 feature",
            ));
        }
        #[cfg(not(feature = "budget-redis"))]
        if self.budget_redis().is_some() {
            return Err(ConfigError::invalid(
                "redis",
                "is where a fleet keeps its budgets, which needs tollgate's `budget-redis` \
                 feature",
            ));
        }
        check("redis", self.redis.as_ref(), RedisSettings::validate)?;
        if self.max_scopes == 0 {
            return Err(ConfigError::new(
                "max_scopes",
                0,
                "must be at least 1 (every layer keeps state for the scopes it sees)",
            ));
        }
        check(
            "rate_limit",
            self.rate_limit.as_ref(),
            RateLimitConfig::validate,
        )?;
        check(
            "concurrency",
            self.concurrency.as_ref(),
            ConcurrencyConfig::validate,
        )?;
        check("overload", self.overload.as_ref(), OverloadConfig::validate)?;
        check("retry", self.retry.as_ref(), RetryConfig::validate)?;
        check(
            "circuit_breaker",
            self.circuit_breaker.as_ref(),
            CircuitConfig::validate,
        )?;
        check("timeouts", self.timeouts.as_ref(), TimeoutConfig::validate)?;
        check("cache", self.cache.as_ref(), CacheConfig::validate)?;
        check("pool", self.pool.as_ref(), PoolConfig::validate)?;
        check(
            "budget",
            self.budget.as_ref(),
            tollgate_budget::BudgetConfig::validate,
        )?;
        #[cfg(feature = "deferred")]
        check(
            "deferred",
            self.deferred.as_ref(),
            tollgate_deferred::DeferredConfig::validate,
        )?;
        check("batch", self.batch.as_ref(), |b: &BatchConfig| {
            if b.max_batch_size == 0 {
                Err(ConfigError::new(
                    "max_batch_size",
                    0,
                    "must be at least 1; set enabled = false for no batching",
                ))
            } else {
                Ok(())
            }
        })?;
        Ok(())
    }

    /// These settings with the deferred queue's environment variables laid over:
    /// `USE_BATCHED_CLIENT`, `BATCH_INTERVAL_HOURS` and `MAX_BATCH_SIZE` (read through `var`,
    /// `|name| std::env::var(name).ok()` for the process's). When any is set, the
    /// `[deferred]` section is there, with them over what the file says.
    ///
    /// # Errors
    ///
    /// A variable set to what it cannot be, named with its value.
    #[cfg(feature = "deferred")]
    pub fn with_env(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let names = [
            "USE_BATCHED_CLIENT",
            "BATCH_INTERVAL_HOURS",
            "MAX_BATCH_SIZE",
        ];
        if names.iter().any(|name| var(name).is_some()) {
            let base = self.deferred.take().unwrap_or_default();
            let deferred = base.with_vars(&var)?;
            deferred.validate().map_err(|e| e.within("deferred"))?;
            self.deferred = Some(deferred);
        }
        Ok(self)
    }

    /// Keys that were read but cannot be honoured as written, and why. [`LlmStack::new`]
    /// logs each as a warning.
    ///
    /// [`LlmStack::new`]: crate::LlmStack::new
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }

    /// The most calls the stack keeps in flight (unbounded when the concurrency limit is left
    /// out): with a pool, the sum of its members' limits (a `keys_env` member counted once).
    pub fn max_concurrent_calls(&self) -> usize {
        let Some(concurrency) = &self.concurrency else {
            return usize::MAX;
        };
        match &self.pool {
            None => concurrency.max_in_flight,
            Some(pool) => pool
                .members
                .iter()
                .map(|m| m.max_concurrent.unwrap_or(concurrency.max_in_flight))
                .fold(0usize, usize::saturating_add),
        }
    }

    /// Where the rate limits are kept in Redis: `rate_limit.redis`, else `[redis]` (none
    /// without rate limits).
    pub fn rate_limit_redis(&self) -> Option<&RedisSettings> {
        let section = self.rate_limit.as_ref()?;
        section.redis.as_ref().or(self.redis.as_ref())
    }

    /// Where the cache's second level is kept: `cache.redis`, else `[redis]` (none without a
    /// cache).
    pub fn cache_redis(&self) -> Option<&RedisSettings> {
        let section = self.cache.as_ref()?;
        section.redis.as_ref().or(self.redis.as_ref())
    }

    /// Where a pool's cooldowns are shared by a fleet: `[redis]` (none without a pool).
    pub fn pool_redis(&self) -> Option<&RedisSettings> {
        self.pool.as_ref()?;
        self.redis.as_ref()
    }

    /// Where the breakers are shared by a fleet: `[redis]` (none without a breaker).
    pub fn circuit_redis(&self) -> Option<&RedisSettings> {
        self.circuit_breaker.as_ref()?;
        self.redis.as_ref()
    }

    /// Where the budgets keep their books in Redis: `[redis]` (none without budgets).
    pub fn budget_redis(&self) -> Option<&RedisSettings> {
        self.budget.as_ref()?;
        self.redis.as_ref()
    }

    /// The field that names `section`'s Redis: its own `redis`, or the top-level one.
    pub(crate) fn redis_field(&self, section: &str) -> String {
        let own = match section {
            "rate_limit" => self.rate_limit.as_ref().is_some_and(|r| r.redis.is_some()),
            "cache" => self.cache.as_ref().is_some_and(|c| c.redis.is_some()),
            _ => false,
        };
        if own {
            format!("{section}.redis")
        } else {
            "redis".to_owned()
        }
    }

    /// The longest silence allowed between two chunks of a stream, if any.
    pub fn stream_idle_timeout(&self) -> Option<Duration> {
        self.timeouts.as_ref().and_then(|t| t.idle)
    }
}

impl TryFrom<Value> for StackConfig {
    type Error = ConfigError;

    fn try_from(value: Value) -> Result<Self, ConfigError> {
        Self::from_value(value)
    }
}

/// One section, read as `T`; an error names the path inside it.
fn section<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::invalid(field, inner).within(name)
    })
}

/// Lays `over` on `base`, table by table; any other value (null included) replaces.
fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(inner)), Value::Object(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].lines().count().max(1)
}
