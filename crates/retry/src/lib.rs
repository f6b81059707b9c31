//! Retries for LLM APIs that honour the provider and never storm.
//!
//! Retries are where LLM clients waste the most money and cause the most storms. This layer:
//!
//! - **retries only what can succeed** — rate limited, overloaded, server errors, timeouts,
//!   connect errors, and what the provider marks `x-should-retry: true` — and never an exhausted
//!   quota, an oversize request, an auth or client error, a prompt over the context length
//!   ([`RetryPolicy`], default [`DefaultRetryPolicy`]);
//! - **never sends twice what must not be**: a file upload, a batch creation or an unknown
//!   `POST` is sent again only when the failure proves it was not processed, a billed call
//!   (generation, embeddings) not after its connection broke once sent, unless you opt in
//!   ([`RetryLayer::with_resend_unanswered`]); see below;
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
//! # Why a retry can cost twice
//!
//! A failed attempt is not always an attempt the provider never saw. A connection reset after
//! the request was written ([`ConnectionLost`](tollgate_core::OutcomeKind::ConnectionLost)),
//! a timeout before the response head, a 500: the provider may have run the generation and
//! billed it, stored the file, created the batch. Resending then bills the call twice, or
//! leaves a second file or batch behind — and the `idempotency-key` header only helps with a
//! provider that honours it.
//!
//! So every retry also asks [`Repeat`](tollgate_core::Repeat) (decided by `AnnotateLayer` from
//! the method and path) whether the request may be sent again after what the failure proves:
//!
//! - a failure that proves the request was not processed — a refusal by a layer below, a
//!   [`ConnectError`](tollgate_core::OutcomeKind::ConnectError) (never sent), a 401, 403,
//!   429, 503 or 529 — is retried on every endpoint;
//! - reads and free read-only `POST`s (`GET /v1/models`, token counting) are retried after any
//!   retryable failure;
//! - billed calls (chat, messages, responses, completions, embeddings) are retried after a
//!   server error or a timeout, as SDKs do — **a timed-out call may have been billed, and its
//!   retry is billed again** — but not after a lost connection unless
//!   [`with_resend_unanswered(true)`](RetryLayer::with_resend_unanswered);
//! - file uploads (`POST /v1/files`, `/v1/uploads`), batch creations (`POST /v1/batches`,
//!   `/v1/messages/batches`) and unknown `POST`s are never retried after a server error, a
//!   timeout or a lost connection: their failure is handed back for the caller to check.
//!
//! A give-up for this reason is counted as `why="unsafe_to_resend"`.
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
//!     .layer(RetryLayer::patient().with_deadline(Duration::from_secs(120)))
//!     .layer(tollgate_core::classify::ClassifyLayer::new())
//!     .service(client);
//! # stack }
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod budget;
mod config;
pub mod future;
mod hedge;
mod layer;
mod metrics;
mod policy;
mod service;

pub use self::backoff::{Backoff, Jitter};
pub use self::budget::RetryBudget;
pub use self::config::{JitterName, JitterSetting, RetryConfig};
pub use self::future::Retried;
pub use self::hedge::{Hedge, HedgeAfter, HedgeWhen};
pub use self::layer::{IDEMPOTENCY_KEY, RetryLayer};
pub use self::policy::{DefaultRetryPolicy, RetryPolicy};
pub use self::service::Retry;
