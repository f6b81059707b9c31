//! Tollgate: call LLM APIs at volume without 429 storms, retry storms or surprise bills.
//!
//! This facade puts the layers together. [`LlmStack`] builds the standard stack over any
//! `tower::Service<http::Request<Full<Bytes>>>` client — a hyper-util client, another tower
//! stack — from a [`Preset`] or a [`StackConfig`] (flat keys such as `max_requests_per_minute`,
//! from TOML or JSON):
//!
//! ```text
//! Annotate → Cache → Batch (embeddings) → Retry → CircuitBreaker → Overload → RateLimit
//!          → ConcurrencyLimit → Timeout → Classify → client
//! ```
//!
//! To compose your own stack, [`ServiceBuilderExt`] adds each layer to `tower::ServiceBuilder`
//! as a method, and each layer's crate is re-exported: [`core`], [`cache`], [`ratelimit`],
//! [`circuit`], [`retry`], [`concurrency`], [`overload`], [`batch`], [`timeout`], [`pool`].
//! [`fallback`] answers from a service of your own when the API is unavailable; the durable
//! queue for work that can wait, [`deferred`], is not a layer. Neither is in the standard stack.
//!
//! # Cargo features
//!
//! | feature | what it brings |
//! |---|---|
//! | `stack` (default) | [`LlmStack`], presets, [`StackConfig`]; turns on every layer below but `pool` |
//! | `cache`, `batch`, `retry`, `circuit`, `overload`, `ratelimit`, `concurrency`, `timeout` | that layer's crate and its [`ServiceBuilderExt`] method |
//! | `pool` | [`pool`]: many API keys and deployments behind one service |
//! | `fallback` | [`fallback`]: answers from a service of your own (a local model, a stale cache entry) when the API is unavailable |
//! | `ratelimit-redis`, `cache-redis`, `budget-redis`, `circuit-redis`, `pool-redis` | what `[redis]` shares with a fleet: limits, the cache's second level, budgets, breakers, the pool's cooldowns (docs/fleet.md) |
//! | `deferred` | [`deferred`]: the durable queue for work that can wait, sent through the OpenAI or Anthropic Batch API |
//! | `deferred-admin` | the deferred queue's operator routes (axum) |
//! | `metrics` | every enabled layer's metrics through the [`metrics`](https://docs.rs/metrics) facade (docs/metrics.md) |
//! | `tiktoken` | exact OpenAI token counts instead of the estimate |
//!
//! With `default-features = false` and only the layers you name, nothing else is compiled:
//! `tollgate = { version = "0.1", default-features = false, features = ["retry", "circuit"] }`.
#![forbid(unsafe_code)]
// The crate docs name every layer; those whose feature is off are plain text, not links.
#![cfg_attr(
    not(all(
        feature = "cache",
        feature = "batch",
        feature = "retry",
        feature = "circuit",
        feature = "overload",
        feature = "ratelimit",
        feature = "concurrency",
        feature = "timeout",
        feature = "pool",
        feature = "deferred",
        feature = "fallback",
        feature = "stack"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

#[cfg(feature = "stack")]
mod books;
#[cfg(feature = "stack")]
mod compat;
#[cfg(feature = "stack")]
mod config;
mod ext;
#[cfg(feature = "stack")]
mod handle;
#[cfg(feature = "stack")]
mod optional;
#[cfg(feature = "stack")]
mod preset;
#[cfg(feature = "stack")]
mod redis;
#[cfg(feature = "stack")]
mod stack;

#[cfg(feature = "stack")]
pub use self::books::Books;
#[cfg(feature = "stack")]
pub use self::config::{ConfigError, ConfigWarning, StackConfig};
pub use self::ext::ServiceBuilderExt;
#[cfg(feature = "stack")]
pub use self::handle::{ScopeHealth, StackHandle};
#[cfg(feature = "stack")]
pub use self::preset::Preset;
#[cfg(feature = "stack")]
pub use self::redis::RedisUnavailable;
#[cfg(feature = "stack")]
pub use self::stack::{LlmBody, LlmService, LlmStack};
pub use tollgate_core as core;

#[cfg(feature = "batch")]
pub use tollgate_batch as batch;
#[cfg(feature = "budget")]
pub use tollgate_budget as budget;
#[cfg(feature = "cache")]
pub use tollgate_cache as cache;
#[cfg(feature = "circuit")]
pub use tollgate_circuit as circuit;
#[cfg(feature = "concurrency")]
pub use tollgate_concurrency as concurrency;
#[cfg(feature = "deferred")]
pub use tollgate_deferred as deferred;
#[cfg(feature = "fallback")]
pub use tollgate_fallback as fallback;
#[cfg(feature = "overload")]
pub use tollgate_overload as overload;
#[cfg(feature = "pool")]
pub use tollgate_pool as pool;
#[cfg(feature = "ratelimit")]
pub use tollgate_ratelimit as ratelimit;
#[cfg(feature = "retry")]
pub use tollgate_retry as retry;
#[cfg(feature = "timeout")]
pub use tollgate_timeout as timeout;
