//! Token-aware, header-driven rate limiting for LLM APIs.
//!
//! Providers limit requests **and** tokens per minute (and input and output tokens, and
//! requests per day), per key and model. A limiter that counts only requests lets a burst of
//! long prompts through and meets a wall of 429s; one that counts tokens only after the answer
//! has already overspent. This one:
//!
//! - **reserves before sending**: each request reserves its estimate — the input-token estimate
//!   and `max_tokens` from [`LlmRequest`](tollgate_core::LlmRequest) (or the scope's running
//!   average of output tokens when the request sets no cap) — on every limited dimension, all
//!   or nothing;
//! - **reconciles after the answer**: when the body (or the stream) ends, the usage the
//!   provider reported refunds what was over-estimated and charges what was under;
//! - **listens to the provider**: each response's `x-ratelimit-*` / `anthropic-ratelimit-*`
//!   headers tighten the local view, so it slows down before a 429, and a 429's `retry-after`
//!   pauses the scope's dimension for every caller; limits nobody configured are learned from
//!   those headers;
//! - **learns from refusals** when there are no headers (Gemini, many OpenAI-compatible hosts
//!   and gateways): a 429 on a limit nobody configured sets a pace at what the upstream
//!   admitted before refusing, which keeps probing up and is cut on the next 429 (see
//!   "Limits learned from refusals" in the [`learn`] module); a [`RateLimitHandle`]
//!   ([`RateLimitLayer::handle`]), `StackHandle::health`, the gateway's `/health` and a metric
//!   show each limit, where it comes from ([`QuotaSource`]), what remains and what requests in
//!   flight hold;
//! - **waits in line rather than failing**: a request that does not fit now is given its turn,
//!   in arrival order, and sleeps until then without holding any downstream capacity; a
//!   [`MaxWait`] or a [`Deadline`](tollgate_core::Deadline) turns a long wait into an immediate
//!   [`RateLimited`](tollgate_core::error::RateLimited) error with the wait it would have had,
//!   and a request that can never fit is refused at once
//!   ([`ExceedsLimit`](tollgate_core::error::ExceedsLimit)).
//!
//! Each dimension is a GCRA on one atomic word ([`MemoryStore`]): a decision is a
//! compare-exchange per limited dimension, no lock and no allocation. A [`Store`] can also keep
//! the state in Redis for a fleet sharing one key (feature `redis`).
//!
//! Feature `metrics`: waits, refusals, pauses and tokens reserved and used per scope through the
//! [`metrics`](https://docs.rs/metrics) facade (`tollgate_ratelimit_*`, see `docs/metrics.md`).
//!
//! # Example
//!
//! ```
//! use tollgate_core::{annotate::AnnotateLayer, classify::ClassifyLayer};
//! use tollgate_ratelimit::{Quotas, RateLimitLayer};
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S) -> impl Sized {
//! // OpenAI tier 1 for gpt-4o-mini: 500 requests and 200,000 tokens a minute.
//! let stack = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(RateLimitLayer::new(Quotas::per_minute(500, 200_000)))
//!     .layer(ClassifyLayer::new())
//!     .service(client);
//! # stack }
//! ```
//!
//! The layer reads the [`Outcome`](tollgate_core::Outcome), [`RateLimitSnapshot`](tollgate_core::RateLimitSnapshot)
//! and [`EndOfStream`](tollgate_core::body::EndOfStream) that `ClassifyLayer` puts in the
//! response; without it, it classifies status and headers itself and keeps each reservation
//! whole (there is no usage to reconcile with).
#![forbid(unsafe_code)]

mod admitted;
mod config;
pub mod future;
mod gcra;
mod handle;
mod layer;
pub mod learn;
mod memory;
mod metrics;
mod quota;
#[cfg(feature = "redis")]
mod redis;
mod reservation;
mod service;
mod store;

pub use self::config::{ModelLimits, RateLimitConfig, RedisSettings};
pub use self::gcra::View;
pub use self::handle::{RateLimitHandle, ScopeLimits};
pub use self::layer::{DEFAULT_OUTPUT_TOKENS, RateLimitLayer};
pub use self::memory::{LimitState, MemoryScope, MemoryStore, QuotaSource};
pub use self::quota::{Dimension, Quota, QuotaTable, Quotas, ScopeMatch};
#[cfg(feature = "redis")]
pub use self::redis::{RedisReserve, RedisScope, RedisStore, RoundTrips};
pub use self::service::{MaxWait, RateLimit};
pub use self::store::{Charges, Refusal, ScopeStats, Store};
pub use tollgate_core::DEFAULT_MAX_SCOPES;
