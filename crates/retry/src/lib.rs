//! Retries for LLM APIs that honour the provider and never storm.
//!
//! Retries are where LLM clients waste the most money and cause the most storms. This layer:
//!
//! - **retries only what can succeed** — rate limited, overloaded, server errors, timeouts,
//!   connect errors, and what the provider marks `x-should-retry: true` — and never an exhausted
//!   quota, an oversize request, an auth or client error, a prompt over the context length
//!   ([`RetryPolicy`], default [`DefaultRetryPolicy`]);
//! - **waits as long as the provider asks** — `retry-after-ms`, `retry-after`, Gemini's
//!   `RetryInfo`, OpenAI's "try again in 1.146s", a [`CircuitOpen`](tollgate_core::error::CircuitOpen)
//!   or [`RateLimited`](tollgate_core::error::RateLimited) from the layers below — up to a cap,
//!   and otherwise backs off with jitter ([`Backoff`]: exponential with full, equal or
//!   proportional jitter, decorrelated jitter);
//! - **keeps one deadline** across every attempt and wait (a [`Deadline`](tollgate_core::Deadline)
//!   extension, or the layer's default): a wait that would pass it fails now, with the last
//!   outcome, instead of sleeping for nothing;
//! - **never storms**: a [`RetryBudget`] shared by every clone lets retries add at most a set
//!   share of load (20 % by default), however many attempts each request may make;
//! - **replays without copying**: the buffered body from `AnnotateLayer` is `Bytes`; every
//!   attempt carries the same idempotency key header so the provider can de-duplicate;
//! - **respects streams**: a response is handed over as soon as its headers say success, so a
//!   stream that fails after its first byte reaches the caller as an error in the stream — it is
//!   never replayed under a caller who has already read part of it;
//! - **hedges, if asked** ([`Hedge`]): a backup attempt for a call slower than a percentile of
//!   recent ones, first success wins, for calls safe to send twice unless configured otherwise.
//!
//! The attempts and the time waited are in the final response's extensions ([`Retried`]) and
//! in `tracing` events; with feature `metrics`, retries by reason, give-ups, waits and hedges go
//! through the [`metrics`](https://docs.rs/metrics) facade too (`tollgate_retry_*`, see
//! `docs/metrics.md`).
//!
//! ```
//! use std::time::Duration;
//! use tollgate_retry::RetryLayer;
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S) -> impl Sized {
//! let stack = ServiceBuilder::new()
//!     .layer(tollgate_core::annotate::AnnotateLayer::new())
//!     .layer(RetryLayer::seeds().with_deadline(Duration::from_secs(120)))
//!     .layer(tollgate_core::classify::ClassifyLayer::new())
//!     .service(client);
//! # stack }
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod budget;
pub mod future;
mod hedge;
mod layer;
mod metrics;
mod policy;
mod service;

pub use self::backoff::{Backoff, Jitter};
pub use self::budget::RetryBudget;
pub use self::future::Retried;
pub use self::hedge::{Hedge, HedgeAfter, HedgeWhen};
pub use self::layer::{IDEMPOTENCY_KEY, RetryLayer};
pub use self::policy::{DefaultRetryPolicy, RetryPolicy};
pub use self::service::Retry;
