//! The simulator's configuration: keys and their limits, latency, failure modes and scripted
//! phases. Loads from TOML (see `docs/scenarios/`); durations are human-readable (`"250ms"`).

mod limits;
mod models;
mod prompt_cache;
mod shape;

use std::time::Duration;

use serde::Deserialize;
use tollgate_core::error::ConfigError;

pub use self::limits::{KeyConfig, Limits};
pub use self::models::DEFAULT_MODELS;
pub use self::prompt_cache::PromptCacheConfig;
pub use self::shape::{Burst, BurstPerDimension, Window};

/// Everything the simulator does, as one value. `SimConfig::default()` is a healthy, instant
/// provider that accepts any key with generous limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seeds every random choice (latency tails, failures, generated text): the same seed and
    /// the same sequence of requests give the same responses.
    pub seed: u64,
    /// Whether a key that is not in [`keys`](Self::keys) is accepted (with the default
    /// [`limits`](Self::limits)) or refused with a 401. Defaults to accepting any key when no
    /// keys are configured, and to refusing unknown keys when some are.
    pub allow_unknown_keys: Option<bool>,
    /// The limits of every key that does not set its own.
    pub limits: Limits,
    /// Configured API keys.
    pub keys: Vec<KeyConfig>,
    /// How long responses take.
    pub latency: Latency,
    /// How long generated answers are.
    pub output: Output,
    /// Failure modes.
    pub faults: Faults,
    /// Scripted phases over time (healthy → overloaded → recovering ...), from the start.
    pub phases: Vec<Phase>,
    /// Whether the phases start over after the last one (else the last one lasts forever).
    pub repeat_phases: bool,
    /// Batch API behaviour.
    pub batch: BatchConfig,
    /// The largest request body accepted; a larger one is a 413.
    pub max_body_bytes: usize,
    /// How many requests the request log keeps (the oldest are dropped first).
    pub log_capacity: usize,
    /// Which provider the OpenAI-shaped routes (`/v1/chat/completions`, `/v1/embeddings`)
    /// imitate: their rate-limit headers and error bodies.
    pub openai_flavor: OpenAiFlavor,
    /// The models `GET /v1/models` lists and `GET /v1/models/{id}` knows (by default
    /// [`DEFAULT_MODELS`]). Generation routes accept any model; only the Models API reads
    /// this list.
    pub models: Vec<String>,
    /// Prompt caching per key.
    pub prompt_cache: PromptCacheConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            allow_unknown_keys: None,
            limits: Limits::default(),
            keys: Vec::new(),
            latency: Latency::default(),
            output: Output::default(),
            faults: Faults::default(),
            phases: Vec::new(),
            repeat_phases: false,
            batch: BatchConfig::default(),
            max_body_bytes: 32 * 1024 * 1024,
            log_capacity: 10_000,
            openai_flavor: OpenAiFlavor::OpenAi,
            models: DEFAULT_MODELS.map(str::to_owned).to_vec(),
            prompt_cache: PromptCacheConfig::default(),
        }
    }
}

impl SimConfig {
    /// Parses and validates a TOML scenario.
    ///
    /// # Errors
    ///
    /// A TOML syntax or type error (with its line), or a value out of range (naming the field).
    pub fn from_toml(text: &str) -> Result<Self, tollgate_core::BoxError> {
        let config: Self = toml::from_str(text).map_err(|error| {
            // toml's own Display draws the source over several lines; one line reads better
            // in logs and CLI errors.
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let message = error.message().trim_end();
            match line {
                Some(line) => format!("line {line}: {message}"),
                None => message.to_owned(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; called by [`from_toml`](Self::from_toml) and by the simulator on
    /// start.
    ///
    /// # Errors
    ///
    /// The first invalid field, by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate("limits")?;
        for (i, key) in self.keys.iter().enumerate() {
            if key.key.is_empty() {
                return Err(ConfigError::new(
                    format!("keys[{i}].key"),
                    "\"\"",
                    "must not be empty",
                ));
            }
            key.limits_over(&self.limits)
                .validate(&format!("keys[{i}]"))?;
        }
        self.latency.validate("latency")?;
        self.faults.validate("faults")?;
        self.output.validate()?;
        for phase in &self.phases {
            if phase.duration.is_zero() {
                return Err(ConfigError::new(
                    "phases.duration",
                    "0s",
                    "must be positive",
                ));
            }
            if let Some(faults) = &phase.faults {
                faults.validate("phases.faults")?;
            }
            if let Some(latency) = &phase.latency {
                latency.validate("phases.latency")?;
            }
        }
        self.batch.validate()?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", 0, "must be at least 1"));
        }
        models::validate(&self.models)?;
        self.prompt_cache.validate()
    }

    /// Whether keys that are not configured are accepted.
    pub fn accepts_unknown_keys(&self) -> bool {
        self.allow_unknown_keys.unwrap_or(self.keys.is_empty())
    }
}

/// The provider behind the OpenAI-shaped routes: the bodies are OpenAI's either way, the
/// headers and errors are the flavor's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OpenAiFlavor {
    /// OpenAI itself (`"openai"`): `x-ratelimit-*` headers, `{"error":{...}}` bodies.
    #[default]
    OpenAi,
    /// Mistral (`"mistral"`): `x-ratelimitbysize-*-minute` headers, `{"object":"error",...}`
    /// bodies.
    Mistral,
}

impl<'de> Deserialize<'de> for OpenAiFlavor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "openai" => Ok(Self::OpenAi),
            "mistral" => Ok(Self::Mistral),
            other => Err(serde::de::Error::custom(format!(
                "openai_flavor must be \"openai\" or \"mistral\", not {other:?}"
            ))),
        }
    }
}

/// How long a response takes: time to first token, then time per output token, with a tail.
#[derive(Clone, Copy, Debug, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// Before the response headers (and the first token of a stream).
    #[serde(with = "tollgate_core::config::duration")]
    pub time_to_first_token: Duration,
    /// Per generated token (between stream chunks; added up for a JSON response).
    #[serde(with = "tollgate_core::config::duration")]
    pub per_output_token: Duration,
    /// The share of requests that are slow (0.0–1.0).
    pub tail_probability: f64,
    /// How much slower a tail request is (≥ 1).
    pub tail_multiplier: f64,
}

impl Latency {
    fn validate(&self, table: &str) -> Result<(), ConfigError> {
        check_rate(self.tail_probability, field(table, "tail_probability"))?;
        if self.tail_probability > 0.0
            && !(self.tail_multiplier >= 1.0 && self.tail_multiplier.is_finite())
        {
            return Err(ConfigError::new(
                field(table, "tail_multiplier"),
                self.tail_multiplier,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// How long generated answers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Output {
    /// The shortest natural answer, in tokens.
    pub min_tokens: u32,
    /// The longest natural answer, in tokens (a request's `max_tokens` cuts it shorter).
    pub max_tokens: u32,
    /// The output cap assumed for a request that sets none (OpenAI charges its TPM estimate
    /// with it).
    pub default_max_tokens: u32,
    /// Vector size for embeddings when the request does not ask for `dimensions`.
    pub embedding_dimensions: u32,
}

impl Default for Output {
    fn default() -> Self {
        Self {
            min_tokens: 16,
            max_tokens: 64,
            default_max_tokens: 4_096,
            embedding_dimensions: 1_536,
        }
    }
}

impl Output {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.min_tokens == 0 || self.min_tokens > self.max_tokens {
            return Err(ConfigError::new(
                "output.min_tokens",
                self.min_tokens,
                "must be between 1 and output.max_tokens",
            ));
        }
        if self.default_max_tokens == 0 {
            return Err(ConfigError::new(
                "output.default_max_tokens",
                0,
                "must be at least 1",
            ));
        }
        if !(1..=8_192).contains(&self.embedding_dimensions) {
            return Err(ConfigError::new(
                "output.embedding_dimensions",
                self.embedding_dimensions,
                "must be between 1 and 8192",
            ));
        }
        Ok(())
    }
}

/// Failure modes, each off by default.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Hidden concurrency capacity: beyond this many requests in flight (streams count until
    /// their last byte), requests are refused as overloaded.
    pub capacity: Option<u32>,
    /// How an overload is answered: 529 `overloaded_error` (Anthropic), 500 "Overloaded", or
    /// 503.
    pub overload_status: u16,
    /// The share of requests answered with a 500 `server_error`.
    pub error_rate: f64,
    /// The share of requests answered as overloaded (with `overload_status`), whatever the
    /// load: a provider whose fleet is saturated by others.
    pub overload_rate: f64,
    /// The share of requests that never get a response (until the client gives up).
    pub hang_rate: f64,
    /// The share of streams cut off mid-way (the connection drops).
    pub stream_disconnect_rate: f64,
    /// The share of streams that end with an error event after a 200.
    pub stream_error_rate: f64,
    /// The share of streams that go silent mid-way: some tokens, then nothing, never an end
    /// (until the client gives up).
    pub stream_stall_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            capacity: None,
            overload_status: 529,
            error_rate: 0.0,
            overload_rate: 0.0,
            hang_rate: 0.0,
            stream_disconnect_rate: 0.0,
            stream_error_rate: 0.0,
            stream_stall_rate: 0.0,
        }
    }
}

impl Faults {
    fn validate(&self, table: &str) -> Result<(), ConfigError> {
        if self.capacity == Some(0) {
            return Err(ConfigError::new(
                field(table, "capacity"),
                0,
                "must be at least 1 (omit it for no limit)",
            ));
        }
        if !matches!(self.overload_status, 500 | 503 | 529) {
            return Err(ConfigError::new(
                field(table, "overload_status"),
                self.overload_status,
                "must be 529, 500 or 503",
            ));
        }
        check_rate(self.error_rate, field(table, "error_rate"))?;
        check_rate(self.overload_rate, field(table, "overload_rate"))?;
        check_rate(self.hang_rate, field(table, "hang_rate"))?;
        check_rate(
            self.stream_disconnect_rate,
            field(table, "stream_disconnect_rate"),
        )?;
        check_rate(self.stream_error_rate, field(table, "stream_error_rate"))?;
        check_rate(self.stream_stall_rate, field(table, "stream_stall_rate"))
    }
}

/// One scripted phase: for `duration`, these faults and latency replace the base ones.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// A name for logs and stats.
    pub name: String,
    /// How long the phase lasts.
    #[serde(with = "tollgate_core::config::duration")]
    pub duration: Duration,
    /// The faults during the phase (the base faults when absent).
    #[serde(default)]
    pub faults: Option<Faults>,
    /// The latency during the phase (the base latency when absent).
    #[serde(default)]
    pub latency: Option<Latency>,
}

/// How the Batch APIs behave.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// How long after creation a batch completes.
    #[serde(with = "tollgate_core::config::duration")]
    pub completion_delay: Duration,
    /// How long after creation a batch expires, standing in for the providers' 24 h
    /// completion window (and shown as its `expires_at`). A batch whose
    /// [`completion_delay`](Self::completion_delay) is longer ends `expired` at this age, with
    /// the results of the first ⌊requests × `expire_after` / `completion_delay`⌋ requests and
    /// every later one marked expired. `None` (the default): batches never expire.
    #[serde(with = "tollgate_core::config::duration::option")]
    pub expire_after: Option<Duration>,
    /// The share of file uploads (`POST /v1/files`) answered with a 500 `server_error` and
    /// stored nowhere (0.0–1.0), drawn from the seed and the request's number like the other
    /// faults. A malformed upload is a 400 whatever the rate.
    pub upload_error_rate: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            completion_delay: Duration::from_secs(2),
            expire_after: None,
            upload_error_rate: 0.0,
        }
    }
}

impl BatchConfig {
    /// The longest [`expire_after`](Self::expire_after): the providers' completion window.
    const MAX_EXPIRE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(expire_after) = self.expire_after {
            let value = || humantime::format_duration(expire_after);
            if expire_after.is_zero() {
                return Err(ConfigError::new(
                    "batch.expire_after",
                    value(),
                    "must be positive (omit it for batches that never expire)",
                ));
            }
            if expire_after > Self::MAX_EXPIRE_AFTER {
                return Err(ConfigError::new(
                    "batch.expire_after",
                    value(),
                    "must be at most 24h, the providers' completion window",
                ));
            }
        }
        check_rate(self.upload_error_rate, "batch.upload_error_rate".into())
    }
}

fn field(table: &str, name: &str) -> String {
    format!("{table}.{name}")
}

fn check_rate(rate: f64, field: String) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::new(field, rate, "must be between 0 and 1"))
    }
}
