//! Overload detection, adaptive concurrency and client-side throttling for LLM calls.
//!
//! A provider rarely says how much it can take; it says "Overloaded" (Anthropic's 529, a 500
//! or 503). [`OverloadLayer`] finds how much work the upstream takes and keeps that much in
//! flight, per scope (provider, credential, model) or [shared](OverloadLayer::shared):
//!
//! - **Adaptive concurrency**: a FIFO limit that moves with the upstream. [`Aimd`] (the
//!   default) adds about one call per round trip while calls succeed and cuts by 10 % when one
//!   is shed or times out; [`Gradient`] follows latency, as Envoy's adaptive concurrency filter.
//!   A timeout is a drop (the limit never climbs under steady timeouts), a shed call carries no
//!   latency, a burst that overshot costs one decrease, and an idle limit does not grow.
//! - **Normalised latency**: an answer's time grows with its length, so samples carry the time
//!   to first byte (first token, for a stream) or, with [`LatencyMeasure::PerOutputToken`], the
//!   time per output token.
//! - **Detection**: each scope is [`Normal`](OverloadState::Normal),
//!   [`Warning`](OverloadState::Warning), [`Critical`](OverloadState::Critical) or
//!   [`Recovering`](OverloadState::Recovering), from the share of shed and timed-out calls and
//!   from latency against a learned baseline over a sliding window ([`DetectorConfig`]).
//!   Transitions are `tracing` events and [`OverloadEvent`]s.
//! - **Client-side throttling** (Google SRE): a request is shed locally, with
//!   [`Overloaded`](tollgate_core::error::Overloaded), with probability
//!   `max(0, (requests − K·accepts) / (requests + 1))`; batch requests (a
//!   [`Priority::Batch`](tollgate_concurrency::Priority) extension) use a smaller `K` outside
//!   Normal, so they are shed first ([`ThrottleConfig`]).
//! - **Batch sizing**: [`OverloadHandle::recommended_batch_size`] shrinks under errors and is 1
//!   while a breaker is open.
//!
//! The permit is held by the response body until its last byte; a stream is judged when it
//! ends. Errors from layers below that never reached the upstream (an open breaker, a local
//! rate limit) say nothing about its load and are ignored.
//!
//! ```
//! use tollgate_core::annotate::AnnotateLayer;
//! use tollgate_core::classify::ClassifyLayer;
//! use tollgate_overload::{Gradient, OverloadLayer};
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S) -> impl Sized {
//! let overload = OverloadLayer::new(); // AIMD; or .with_algorithm(Gradient::new())
//! let handle = overload.handle(); // limits, states, batch sizes, transitions
//! let stack = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(overload)
//!     .layer(ClassifyLayer::new())
//!     .service(client);
//! # stack }
//! ```
//!
//! Against tollgate-sim with a hidden capacity of 8 and 64 callers, the AIMD limit settles at
//! the capacity; `docs/overload-limit.svg` plots it (made by this crate's `limit_plot`
//! example).
//!
//! Feature `metrics`: each scope's limit, calls in flight, state, transitions and throttled
//! requests through the [`metrics`](https://docs.rs/metrics) facade (`tollgate_overload_*`, see
//! `docs/metrics.md`).
#![forbid(unsafe_code)]

mod algorithm;
mod batch;
mod config;
mod controller;
mod detector;
pub mod future;
mod handle;
mod layer;
mod limiter;
mod metrics;
mod service;
mod throttle;
mod window;

pub use self::algorithm::{Aimd, Gradient, LimitAlgorithm, Sample};
pub use self::batch::recommended_batch_size;
pub use self::config::OverloadConfig;
pub use self::controller::OverloadEvent;
pub use self::detector::{DetectorConfig, OverloadState};
pub use self::handle::{OverloadHandle, OverloadSnapshot};
pub use self::layer::{BreakerProbe, LatencyMeasure, OverloadLayer};
pub use self::service::Overload;
pub use self::throttle::{ThrottleConfig, rejection_probability};
pub use tollgate_core::DEFAULT_MAX_SCOPES;
