//! Graceful degradation: answer from a service of your own when the LLM API is unavailable.
//!
//! [`FallbackLayer`] answers a call from a service of your own when the upstream is unavailable
//! — a smaller local model, a rules or regex extractor, a canned answer, a stale cached one —
//! and marks the answer: a [`Degraded`] response extension and an `x-tollgate-degraded` header
//! naming the [`Trigger`]. What falls back is a [`FallbackPolicy`]; by default
//! ([`Triggers::default`]) overloaded, circuit open, rate limited, timeouts, connect and server
//! errors do; an exhausted quota, a refused key and an invalid request never do unless asked —
//! the caller must see those. A stream that fails after its first byte reaches the caller as it
//! is: part of it has been read.
//!
//! Put it above the retry layer (retries first, the fallback when they give up) and the
//! breaker (an open circuit answers at once from the fallback, without an upstream call).
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tollgate_core::annotate::AnnotateLayer;
//! use tollgate_core::classify::ClassifyLayer;
//! use tollgate_fallback::{Degraded, FallbackLayer, Trigger};
//! use tollgate_timeout::{TimeoutConfig, TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! # let config = tollgate_sim::SimConfig { faults: tollgate_sim::config::Faults {
//! #     hang_rate: 1.0, ..Default::default() }, ..Default::default() };
//! # let client = tollgate_sim::SimService::new(config)?; // never answers
//! let canned = service_fn(|_request: http::Request<Full<Bytes>>| async {
//!     let answer = r#"{"choices":[{"message":{"role":"assistant","content":"Try again soon."}}]}"#;
//!     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(answer.as_bytes()))))
//! });
//! let llm = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(FallbackLayer::new(canned))
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
//! let response = llm.oneshot(request).await?;
//! assert_eq!(response.headers()["x-tollgate-degraded"], "timeout");
//! let degraded = response.extensions().get::<Degraded>().unwrap();
//! assert_eq!(degraded.trigger, Trigger::Timeout);
//! let answer = response.into_body().collect().await?.to_bytes();
//! assert!(answer.starts_with(b"{\"choices\""));
//! # Ok(()) }
//! ```
//!
//! # Stale answers
//!
//! A cache that can look up an answer past its time to live is a fallback like any other: a
//! `Service` that answers the request from the stale entry, or fails when it has none (the
//! caller then gets the upstream's failure). The [`Degraded`] extension on the request it is
//! handed says why it was asked. `tollgate-cache` has one: see
//! [Stale on error](FallbackLayer#stale-on-error).
//!
//! # Metrics
//!
//! Feature `metrics`: fallback answers by trigger through the
//! [`metrics`](https://docs.rs/metrics) facade (`tollgate_fallback_*`, see `docs/metrics.md`).
#![forbid(unsafe_code)]

mod config;
pub mod future;
mod layer;
mod metrics;
mod policy;
mod service;
mod trigger;

pub use self::config::FallbackConfig;
pub use self::layer::{DEGRADED_HEADER, FallbackLayer};
pub use self::policy::{FallbackPolicy, Triggers};
pub use self::service::Fallback;
pub use self::trigger::{Degraded, Trigger};
