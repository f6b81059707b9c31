//! A fair concurrency limit for LLM calls, with priority partitions.
//!
//! - **Fair**: callers wait in arrival order (tokio's semaphore is FIFO); an optional queue
//!   timeout turns a long wait into a [`QueueTimeout`](tollgate_core::error::QueueTimeout) error.
//! - **Bulkheads**: with [`with_partitions`](ConcurrencyLimitLayer::with_partitions), interactive
//!   and batch requests (a [`Priority`] in the request extensions) get separate shares of the
//!   limit — 90 % / 10 %, say — so a flood of batch work never takes a slot an interactive
//!   request needs.
//! - **Until the last byte**: an LLM response is often a stream that lasts minutes; the permit
//!   is held by the response body ([`PermitBody`]) until it ends or is dropped, not released
//!   when the headers arrive.
//!
//! A request that must wait holds nothing of the inner service: once it has a permit it waits
//! for the inner service to be ready and calls a clone of it.
//!
//! Feature `metrics`: queue waits and queue timeouts per partition through the
//! [`metrics`](https://docs.rs/metrics) facade (`tollgate_concurrency_*`, see `docs/metrics.md`).
//!
//! ```
//! use tollgate_concurrency::ConcurrencyLimitLayer;
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S) -> impl Sized {
//! // 5 concurrent calls, 90 % of them for interactive requests.
//! let stack = ServiceBuilder::new()
//!     .layer(ConcurrencyLimitLayer::new(5).with_partitions(0.9))
//!     .service(client);
//! # stack }
//! ```
#![forbid(unsafe_code)]

mod body;
mod config;
pub mod future;
mod layer;
mod metrics;
mod service;

pub use self::body::PermitBody;
pub use self::config::ConcurrencyConfig;
pub use self::layer::{ConcurrencyLimitLayer, Priority};
pub use self::service::ConcurrencyLimit;
