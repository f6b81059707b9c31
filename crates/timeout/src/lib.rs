//! Timeouts that know LLM calls.
//!
//! # Timeouts
//!
//! One timeout per call does not fit an LLM API. A streamed answer of 4,000 tokens can take
//! four minutes and be perfectly healthy, while a stream that has said nothing for 30 seconds
//! is stuck; and a request that does not stream gets its headers only once the whole answer is
//! written. [`TimeoutLayer`] gives each attempt three limits ([`TimeoutConfig`]):
//!
//! - **time to first byte**, for a streamed request: the response headers, then the first data,
//!   must come within it (60 s by default);
//! - **idle**: the longest silence between two chunks of the body (30 s);
//! - **total**: from the call to the last byte, growing with the output the request allows —
//!   60 s plus 50 ms per `max_tokens` by default: a long answer is not a slow answer.
//!
//! The request's own [`Deadline`](tollgate_core::Deadline) (shared with `tollgate-retry`, which
//! sets it for every attempt) cuts any of them shorter, and a [`Timeouts`] request extension
//! changes them for one request.
//!
//! What the caller and the other layers see depends on when the time runs out:
//!
//! - **before the response**: the call fails with a [`FirstByteTimeout`](error::FirstByteTimeout),
//!   an [`Outcome`](tollgate_core::Outcome) of [`Timeout`](tollgate_core::OutcomeKind::Timeout)
//!   to every layer above, which a retry layer may retry: nothing reached the caller;
//! - **mid-body**: the body ends with an [`IdleTimeout`](error::IdleTimeout) or a
//!   [`TotalTimeout`](error::TotalTimeout) the caller reads as the body's error, the upstream
//!   body is dropped at once, and the layers that wait for the end of the stream — the breaker,
//!   the rate limiter, the adaptive limit — see a stream that failed with a timeout.
//!
//! Put it just above `ClassifyLayer`, below the limits and the breaker, as the standard stack
//! does: each attempt has its own limits, and a timeout counts against the upstream that
//! caused it.
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tollgate_core::annotate::AnnotateLayer;
//! use tollgate_core::classify::ClassifyLayer;
//! use tollgate_timeout::error::FirstByteTimeout;
//! use tollgate_timeout::{TimeoutConfig, TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! # let config = tollgate_sim::SimConfig { faults: tollgate_sim::config::Faults {
//! #     hang_rate: 1.0, ..Default::default() }, ..Default::default() };
//! # let client = tollgate_sim::SimService::new(config)?; // never answers
//! let llm = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(TimeoutLayer::new(TimeoutConfig {
//!         first_byte: Some(Duration::from_secs(10)),
//!         ..TimeoutConfig::default()
//!     })?)
//!     .layer(ClassifyLayer::new())
//!     .service(client);
//!
//! let request = http::Request::post("https://api.openai.com/v1/chat/completions")
//!     .header("authorization", "Bearer sk-example")
//!     .body(Full::new(Bytes::from_static(
//!         br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
//!     )))?;
//! let error = llm.oneshot(request).await.unwrap_err();
//! assert!(error.is::<FirstByteTimeout>(), "{error}");
//! # Ok(()) }
//! ```
//!
//! # When the time runs out
//!
//! To answer from a service of your own instead — a smaller local model, a canned answer, a
//! stale cached one — put `tollgate-fallback`'s `FallbackLayer` above this one: a timeout is one
//! of its default triggers.
//!
//! # Metrics
//!
//! Feature `metrics`: timeouts by limit (first byte, idle, total, deadline) through the
//! [`metrics`](https://docs.rs/metrics) facade (`tollgate_timeout_*`, see `docs/metrics.md`).
#![forbid(unsafe_code)]

mod body;
mod config;
pub mod error;
pub mod future;
mod layer;
mod metrics;
mod plan;
mod service;

pub use self::body::TimeoutBody;
pub use self::config::{TimeoutConfig, Timeouts};
pub use self::layer::TimeoutLayer;
pub use self::service::Timeout;
