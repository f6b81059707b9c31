//! Tollgate: call LLM APIs at volume without 429 storms, retry storms or surprise bills.
//!
//! This facade puts the layers together. [`LlmStack`] builds the standard stack over any
//! `tower::Service<http::Request<Full<Bytes>>>` client — a hyper-util client, another tower
//! stack — from a [`Preset`] or a [`StackConfig`] (the seeds' keys, from TOML or JSON):
//!
//! ```text
//! Annotate → Cache → Batch (embeddings) → Retry → CircuitBreaker → Overload → RateLimit
//!          → ConcurrencyLimit → Timeout → Classify → client
//! ```
//!
//! Each layer is also re-exported for users composing their own stack:
//! [`core`], [`cache`], [`ratelimit`], [`circuit`], [`retry`], [`concurrency`], [`overload`],
//! [`batch`], [`timeout`].
#![forbid(unsafe_code)]

mod config;
mod stack;

pub use self::config::{
    BackoffSection, BatchSection, CacheSection, CircuitSection, ConfigError, Preset, StackConfig,
    TimeoutSection,
};
pub use self::stack::{LlmBody, LlmService, LlmStack, ScopeHealth, StackHandle};
pub use {
    tollgate_batch as batch, tollgate_cache as cache, tollgate_circuit as circuit,
    tollgate_concurrency as concurrency, tollgate_core as core, tollgate_overload as overload,
    tollgate_ratelimit as ratelimit, tollgate_retry as retry, tollgate_timeout as timeout,
};
