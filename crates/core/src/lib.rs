//! The shared LLM vocabulary of Tollgate.
//!
//! Every Tollgate layer speaks about LLM calls in the same terms, defined here once:
//!
//! - [`AnnotateLayer`](annotate::AnnotateLayer) (outermost) buffers the request body once and
//!   stores an [`LlmRequest`] in the request extensions: provider, endpoint, model, output-token
//!   cap, streaming, an input-token estimate. No later layer parses JSON again.
//! - [`ClassifyLayer`](classify::ClassifyLayer) (innermost, next to the wire) turns each
//!   response into an [`Outcome`] and a [`RateLimitSnapshot`] from the provider's headers, and
//!   wraps the body so that actual [`Usage`] and a late `event: error` are reported when the
//!   stream ends ([`body::EndOfStream`]).
//! - [`Repeat`] says whether a failed request may be sent again (a resent generation may be
//!   billed twice, a resent upload makes a second file), for every layer that resends.
//! - [`Scope`] keys per-key state, kept in a bounded [`ScopeRegistry`] by every layer that has
//!   some; [`error`] holds the rejections every layer shares;
//!   [`Clock`] and [`rng`] make time and jitter injectable.
//!
//! Feature `metrics`: `Classify` counts requests by outcome and times them through the
//! [`metrics`](https://docs.rs/metrics) facade (`tollgate_requests_total`, see `docs/metrics.md`).
//!
//! Feature `redis`: the module `redis` holds what every layer that keeps a fleet's state in
//! Redis shares (a fail-fast connection, commands under a wall-clock timeout, redacted URLs,
//! the link's health).
//!
//! ```
//! use tollgate_core::{annotate::AnnotateLayer, classify::ClassifyLayer};
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S) -> impl Sized {
//! let stack = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     // ... rate limit, breaker, retry ...
//!     .layer(ClassifyLayer::new())
//!     .service(client);
//! # stack }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod annotate;
pub mod body;
pub mod classify;
pub mod clock;
pub mod config;
pub mod credential;
pub mod duration;
pub mod error;
pub mod estimate;
pub mod metrics;
pub mod model_labels;
pub mod model_name;
pub mod outcome;
mod pending;
mod provider;
pub mod providers;
pub mod ratelimit;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod repeat;
pub mod request;
pub mod rng;
mod scope;
mod scope_map;
pub mod scope_registry;
mod secret;
pub mod usage;

pub use self::clock::{Clock, TokioClock};
pub use self::error::BoxError;
pub use self::outcome::{Outcome, OutcomeKind, RateLimitDimension};
pub use self::pending::PendingCall;
pub use self::provider::{EndpointKind, Provider, UnknownProvider};
pub use self::ratelimit::{RateLimitSnapshot, RateLimitWindow};
pub use self::repeat::{Delivery, Repeat};
pub use self::request::{Deadline, LlmRequest};
pub use self::scope::{CredentialId, Scope};
pub use self::scope_map::ScopeMap;
pub use self::scope_registry::{DEFAULT_MAX_SCOPES, SHARED_SCOPE, ScopeMode, ScopeRegistry};
pub use self::secret::Secret;
pub use self::usage::Usage;
