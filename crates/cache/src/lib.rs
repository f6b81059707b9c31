//! A bounded response cache for LLM calls: identical requests cost once.
//!
//! An application that asks the same question twice pays twice — for embeddings of a document
//! it has seen, a classification at `temperature` 0, a retry of a whole pipeline. And when a
//! hundred workers ask the same question at the same moment, it pays a hundred times.
//! [`CacheLayer`] answers the second and later asks from memory, and lets identical requests in
//! flight at once share one upstream call.
//!
//! - **What is cached** ([`policy`]): embeddings, and generation requests that ask for the
//!   same answer every time (`temperature` 0 or a `seed`, one choice); any request with
//!   `x-tollgate-cache: force`. `cache-control: no-cache` fetches a fresh answer (and stores
//!   it), `no-store` leaves the cache alone. Only answers that succeeded to their last byte are
//!   stored: a 2xx whose stream ended cleanly, without an `event: error`.
//! - **Keys** ([`key`]): a SHA-256 of the endpoint, the model, the credential's id (or a
//!   [`Tenant`]: one tenant never sees another's answers), a few headers that change answers,
//!   and the body in canonical form — JSON key order and whitespace do not change the key.
//! - **Bounded**: by entries and by bytes at once, least recently used first out, with a time
//!   to live (an hour by default) and an optional idle timeout ([`CacheConfig`]), on
//!   [moka](https://docs.rs/moka)'s concurrent cache. Expiry runs on tokio's clock, so tests
//!   with paused time see it exactly.
//! - **Streams**: a streamed answer is recorded as it passes and replayed as the same events,
//!   frame by frame: a hit on a streamed request streams.
//! - **Single flight**: identical cacheable requests in flight at once make one upstream call;
//!   each gets the whole answer, a stream as it arrives. The call runs on a task of its own, so
//!   the first caller leaving strands nobody; when every caller has left, the call is dropped.
//!   What a call holds meanwhile is bounded (see [below](#calls-in-flight-are-bounded-too)).
//! - **Stale on error**: with a [`max_staleness`](CacheConfig::max_staleness), entries are
//!   kept past their time to live, and a [`StaleLookup`] serves them, marked stale, when the
//!   upstream is unavailable (see [below](#stale-on-error)).
//! - **Fleet** (feature `redis`): a shared second level in Redis (`redis::RedisStore`).
//! - **Observable**: every response carries a [`CacheStatus`] extension; hits and shared
//!   answers are marked `x-tollgate-cache: hit` / `coalesced`; [`CacheHandle::snapshot`] counts
//!   hits, misses, coalesced waiters, bypasses, evictions, entries and bytes; with feature
//!   `metrics` the same counts go through the [`metrics`](https://docs.rs/metrics) facade
//!   (`tollgate_cache_*`, see `docs/metrics.md`).
//!
//! The layer sits right after [`AnnotateLayer`](tollgate_core::annotate::AnnotateLayer), which
//! buffers the body and says what the request is; a request without its
//! [`LlmRequest`](tollgate_core::LlmRequest) goes straight through unless forced.
//!
//! # What a hit looks like
//!
//! The stored status, headers and body, replayed: the original's `x-request-id` and rate-limit
//! headers included, as an HTTP cache replays them (they describe the call that paid for the
//! answer), less hop-by-hop headers, with an exact `content-length` (none for a stream), and
//! the hit marker. Nothing was sent, so a hit carries no [`Outcome`](tollgate_core::Outcome),
//! `RateLimitSnapshot` or `EndOfStream`: layers outside the cache that count calls do not
//! count it.
//!
//! # Calls in flight are bounded too
//!
//! A call records its answer as it passes, to store it, and keeps each frame until every
//! caller has read it. That is bounded by [`max_entry_bytes`](CacheConfig::max_entry_bytes)
//! (4 MiB by default): up to it the call keeps every frame and reads the upstream at its own
//! pace, so a slow caller slows nobody and the answer is stored as soon as it ends. Past it
//! the answer will not be stored: the call stops recording, an identical request arriving
//! later makes its own call instead of joining, frames are freed once every caller has read
//! them, and the upstream is read at most 64 KiB ahead of the slowest caller — one that stops
//! reading pauses the upstream read (backpressure, as without the cache) until it reads on or
//! leaves, and one that leaves holds nobody back. So a call holds at most `max_entry_bytes`
//! (or 64 KiB, if larger) and one upstream frame, whoever reads it and however slowly;
//! [`CacheStats::in_flight_bytes`] says how much all of them hold now.
//!
//! The other side of that bound: past `max_entry_bytes`, the callers of one shared call move
//! forward together. A caller that holds two such responses must read them side by side (or
//! drop the one it does not read), not one after the other.
//!
//! # Who a shared call belongs to
//!
//! The call of a flight is the first request's, made with its extensions (its `Deadline`, its
//! priority); the others only read its answer. When it fails, a request that nobody joined
//! gets the error as it is, and every one of several gets a [`SharedCallFailed`] with the
//! error as its source. Each waiter's response carries a copy of the call's extensions
//! (`Outcome`, `RateLimitSnapshot`, `EndOfStream`, whose hooks run when the upstream body
//! ends).
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tollgate_cache::{CacheConfig, CacheLayer, CacheStatus};
//! use tollgate_core::annotate::AnnotateLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! # let client = tollgate_sim::SimService::new(Default::default())?;
//! let cache = CacheLayer::new(CacheConfig::default())?;
//! let stats = cache.handle();
//! let llm = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(cache)
//!     .service(client);
//!
//! let ask = || {
//!     http::Request::post("https://api.openai.com/v1/chat/completions")
//!         .header("authorization", "Bearer sk-example")
//!         .body(Full::new(Bytes::from_static(
//!             br#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Hi"}]}"#,
//!         )))
//! };
//! let first = llm.clone().oneshot(ask()?).await?;
//! assert_eq!(first.extensions().get(), Some(&CacheStatus::Miss));
//! let first = first.into_body().collect().await?.to_bytes();
//!
//! let again = llm.clone().oneshot(ask()?).await?;
//! assert_eq!(again.headers()["x-tollgate-cache"], "hit");
//! assert_eq!(again.into_body().collect().await?.to_bytes(), first);
//! assert_eq!((stats.snapshot().misses, stats.snapshot().hits), (1, 1));
//! # Ok(()) }
//! ```
//!
//! # Stale on error
//!
//! An answer a little old beats no answer while the provider is down. Set
//! [`max_staleness`](CacheConfig::max_staleness) (say ten minutes) and the cache keeps each
//! entry that long past its time to live — ordinary lookups still treat it as expired and go
//! upstream. Put a `FallbackLayer` (from `tollgate-fallback`) above the cache with
//! [`CacheHandle::stale_lookup`] as its fallback: when the upstream call fails in a way the
//! fallback's policy names (overloaded, circuit open, rate limited, timeouts, connect and
//! server errors by default — never an exhausted quota, a refused key or an invalid request
//! unless asked), the stored answer is replayed with `x-tollgate-cache: stale`, an `age`
//! header, [`CacheStatus::Stale`], and the fallback's `Degraded` mark. A request never
//! answered, one whose entry is past `time_to_live + max_staleness`, and one that says
//! `cache-control: no-store` get [`NotCached`] from the lookup, so the caller gets the
//! upstream's own failure.
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tollgate_cache::{CacheConfig, CacheLayer};
//! use tollgate_core::annotate::AnnotateLayer;
//! use tollgate_core::classify::ClassifyLayer;
//! use tollgate_fallback::FallbackLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! # let client = tollgate_sim::SimService::new(Default::default())?;
//! let cache = CacheLayer::new(CacheConfig {
//!     time_to_live: Duration::from_secs(60),
//!     max_staleness: Duration::from_secs(600),
//!     ..CacheConfig::default()
//! })?;
//! let stale = cache.handle().stale_lookup();
//! let llm = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(FallbackLayer::new(stale))
//!     .layer(cache)
//!     .layer(ClassifyLayer::new())
//!     .service(client);
//! # let request = http::Request::post("https://api.openai.com/v1/embeddings")
//! #     .header("authorization", "Bearer sk-example")
//! #     .body(Full::new(Bytes::from_static(br#"{"model":"text-embedding-3-small","input":"Hi"}"#)))?;
//! # assert!(llm.oneshot(request).await?.status().is_success());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod body;
mod call;
mod config;
mod entry;
pub mod error;
mod flight;
pub mod future;
mod handle;
pub mod key;
mod layer;
pub mod policy;
#[cfg(feature = "redis")]
pub mod redis;
mod service;
mod stale;
mod stats;
mod status;
mod store;

pub use self::body::CacheBody;
pub use self::config::CacheConfig;
pub use self::error::{CallLost, NotCached, SharedCallFailed};
pub use self::handle::CacheHandle;
pub use self::key::{CacheKey, Tenant};
pub use self::layer::{CacheLayer, DEFAULT_HEADER};
pub use self::policy::{CachePolicy, DefaultPolicy};
pub use self::service::Cache;
pub use self::stale::{StaleBody, StaleLookup};
pub use self::stats::CacheStats;
pub use self::status::CacheStatus;
