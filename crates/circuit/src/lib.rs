//! A circuit breaker per scope for LLM APIs, driven by classified outcomes.
//!
//! When a provider, a key or a model is down, every call to it times out or fails after
//! seconds; a breaker notices and fails fast instead — with a
//! [`CircuitOpen { retry_after }`](tollgate_core::error::CircuitOpen) that tells a retry layer
//! exactly how long to wait — then lets a few probes through to find out when it is back.
//!
//! - **What counts** is a [`FailurePolicy`] over [`Outcome`](tollgate_core::Outcome)s: by
//!   default overloaded, server errors, timeouts and connect errors; not a 429 (the rate limiter
//!   handles those), never a client error, an exhausted quota or an oversize request. A call
//!   the upstream never saw counts neither way: one refused by a layer below (a local rate
//!   limit, an adaptive limit's shed, a queue timeout, a lower breaker) or cut by the caller's
//!   own deadline. A half-open probe that meets one gives its slot back.
//! - **When it trips**: [`CircuitConfig`] — N consecutive failures (5 by default), a failure
//!   rate over a count or time window with a minimum number of calls, or a slow-call rate
//!   (time to first byte for a stream: a long answer is not a slow one).
//! - **How long it stays open**: 30 s by default, growing on repeated trips (capped, jittered),
//!   or the provider's `retry-after` when the tripping failure carried one. Then half-open admits
//!   exactly N probes (3), never more, and closes only when all succeed.
//! - **Streams** count when they end: an `event: error` after a 200 is a failure, a caller who
//!   walks away is neither.
//! - **Per scope** (one circuit per provider, key and model) with bounded state, or one shared
//!   circuit; [`Mode`]s forced-open, disabled and metrics-only; a [`CircuitHandle`] to steer
//!   them by hand, read their counters and subscribe to their [`CircuitEvent`]s (also logged as
//!   `tracing` events).
//!
//! The closed path is lock-free: admitting a call is an atomic load; recording it an atomic
//! increment or two in a ring of recent calls.
//!
//! # A fleet: one breaker
//!
//! Several processes (gateway replicas, workers) that call the same upstream keys each keep
//! their own circuits: one replica sees a provider fail and opens while the others keep
//! sending. With the feature `redis`,
//! [`CircuitBreakerLayer::with_redis`] shares each scope's circuit with every process that
//! uses the same Redis and prefix ([`RedisBreakerState`]):
//!
//! - a process still trips on its own window of outcomes, and publishes the open period; the
//!   others refuse that scope's calls, with the same `CircuitOpen` and `retry_after`, within
//!   one [sync interval](RedisBreakerState::with_sync_interval) and a round trip (about
//!   100 ms);
//! - half-open admits at most `half_open_probes` probes in the whole fleet per open period
//!   (claimed with an atomic script); their successes close the circuit everywhere, a failure
//!   re-opens it everywhere for the next step of the backoff;
//! - [`CircuitHandle::force_open`], [`reset`](CircuitHandle::reset),
//!   [`disable`](CircuitHandle::disable) and [`metrics_only`](CircuitHandle::metrics_only) act
//!   on every process;
//! - calls never wait on Redis. While it is unreachable (each command times out after 250 ms of
//!   wall-clock time) every process's circuits work on their own, as without Redis; a Redis
//!   error never counts against an upstream. Sharing resumes when Redis answers again.
//!
//! The [`fleet`] module says how late a process may see an open, how the probes are bounded,
//! and which keys live in Redis (scopes by their credential's id, never its secret).
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn demo() -> Result<(), tollgate_core::BoxError> {
//! use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, RedisBreakerState};
//!
//! let state = RedisBreakerState::connect("redis://:password@redis.internal:6379")
//!     .await?
//!     .with_prefix("tollgate:circuit");
//! let breaker = CircuitBreakerLayer::new(CircuitConfig::default())?.with_redis(state);
//! let health = breaker.handle(); // steers every replica's circuits
//! # let _ = health; Ok(()) }
//! ```
//!
//! Feature `metrics`: each circuit's state, transitions and refused calls through the
//! [`metrics`](https://docs.rs/metrics) facade (`tollgate_circuit_*`, see `docs/metrics.md`).
//!
//! ```
//! use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig};
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S) -> Result<impl Sized, tollgate_core::error::ConfigError> {
//! let breaker = CircuitBreakerLayer::new(CircuitConfig::default())?;
//! let health = breaker.handle();
//! let stack = ServiceBuilder::new()
//!     .layer(tollgate_core::annotate::AnnotateLayer::new())
//!     .layer(breaker)
//!     .layer(tollgate_core::classify::ClassifyLayer::new())
//!     .service(client);
//! # let _ = health; Ok(stack) }
//! ```
#![forbid(unsafe_code)]

mod breaker;
mod config;
#[cfg(feature = "redis")]
pub mod fleet;
pub mod future;
mod handle;
mod layer;
mod metrics;
mod policy;
mod service;
mod state;
mod window;

pub use self::config::{CircuitConfig, Mode, Window};
#[cfg(feature = "redis")]
pub use self::fleet::RedisBreakerState;
pub use self::handle::CircuitHandle;
pub use self::layer::CircuitBreakerLayer;
pub use self::policy::{DefaultPolicy, FailurePolicy};
pub use self::service::CircuitBreaker;
pub use self::state::{CircuitEvent, CircuitMetrics, CircuitState, Reason};
pub use self::window::WindowCounts;
pub use tollgate_core::DEFAULT_MAX_SCOPES;
