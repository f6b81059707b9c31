//! A pool of API keys, deployments and providers, with health scores, cooldowns, failover and
//! fallback.
//!
//! Each [`Member`] — an API key, an Azure deployment, another provider or model — has its own
//! stack (breaker, rate limiter, client) as a tower service, and an [`Adapter`] that points a
//! request at it: its key (held as a [`Secret`](tollgate_core::Secret), never in logs, `Debug`
//! or metrics), its host, its model, its paths ([`Rewrite`]). A member without a key of its
//! own passes the caller's credentials on only to the host they came with, never to another
//! ([credentials](Rewrite#credentials)). [`Pool`] routes each request:
//!
//! - **Picking**: among the members in rotation in the lowest tier, by [`Policy`] — the
//!   healthiest (a 0–100 score from the success rate, rate limits, timeouts and latency; ties
//!   go to the least loaded, then in turn), power of two choices, weighted, or ordered.
//! - **Cooldowns** per outcome ([`Cooldowns`]): by default a 429 takes a member out for
//!   the provider's `retry-after` or 60 s, a timeout 10 s, a refused key 1 h, an open breaker
//!   until its wait; an exhausted quota parks it until its reset, or until reset by hand for
//!   `insufficient_quota`. A server error costs score, not rotation. A refusal by the member's
//!   own stack (its rate limiter, an adaptive limit's shed, a queue timeout) never reached its
//!   upstream: it fails over, and costs neither score nor rotation.
//! - **Failover**: an answer another member could do better on (rate limited, quota, auth,
//!   overloaded, server error, timeout, connection) is retried on another member, within one
//!   call — when sending it again is safe ([`Repeat`](tollgate_core::Repeat)): a file upload,
//!   a batch creation or an unknown `POST` fails over only when the answer proves the member
//!   did not process it (a refusal of its own stack, no connection, 401, 403, 429, 503, 529),
//!   and a generation whose connection broke after it was sent does not fail over unless
//!   [`PoolBuilder::resend_unanswered`] says so: the member may have processed and billed it.
//!   With `tollgate-retry` outside, its retries go back through the pool, which remembers (by
//!   the request's `idempotency-key`) which members failed it and tries others first.
//! - **Affinity** (optional, [`PoolBuilder::affinity`]): requests that share a session (an
//!   [`Affinity`] extension, a header, the body's `user` or `prompt_cache_key`) or a long
//!   prompt prefix go to the same member while it is in rotation, healthy and not much busier
//!   than its share, so the provider's prompt cache, kept per account or deployment, keeps
//!   hitting (cached input is billed at a fraction of the price). Rendezvous hashing: a member
//!   out of rotation loses only its own keys, and gets them back when it returns
//!   ([`AffinityConfig`]).
//! - **Fallback**: tier 1 members (a smaller model, another provider) serve only when no tier 0
//!   member can; a context-length error moves only to members with a larger
//!   [context window](Member::context_window).
//! - **Exhausted**: when no member may serve, a request waits for the earliest one back (within
//!   its [`Deadline`](tollgate_core::Deadline)) or fails at once with
//!   [`RateLimited`](tollgate_core::error::RateLimited) ([`WhenExhausted`]).
//! - **Reports**: [`PoolHandle::snapshot`] gives each member's score, state, cooldown left,
//!   calls in flight and counters; [`PoolHandle::reset`] puts one back in rotation.
//! - **Metrics** (feature `metrics`): each member's score, cooldowns and failovers, by member
//!   name, through the [`metrics`](https://docs.rs/metrics) facade (`tollgate_pool_*`, see
//!   `docs/metrics.md`).
//!
//! ```
//! use tollgate_core::Secret;
//! use tollgate_pool::{Auth, Member, Pool, Rewrite};
//!
//! # fn build<S: Clone>(client: S) -> Pool<S> {
//! let pool = Pool::builder()
//!     .member(Member::key("openai-a", Secret::new("sk-a")), client.clone())
//!     .member(Member::key("openai-b", Secret::new("sk-b")), client.clone())
//!     // Azure serves only when both OpenAI keys cannot.
//!     .member(
//!         Member::with_adapter(
//!             "azure-eastus",
//!             Rewrite::default()
//!                 .key(Secret::new("azure-key"), Auth::ApiKey)
//!                 .base("https://contoso.openai.azure.com")
//!                 .azure("gpt-4o", "2024-10-21"),
//!         )
//!         .tier(1),
//!         client,
//!     )
//!     .build();
//! # pool }
//! ```
//!
//! # A fleet: shared cooldowns
//!
//! Each process's pool keeps its cooldowns in memory: in a fleet of replicas running the same
//! pool, a key revoked upstream is taken out by the replica that saw its 401 while every other
//! replica keeps trying it. With the `redis` feature, [`PoolBuilder::with_shared`] and a
//! [`RedisPoolState`] share them: a member one replica takes out of rotation, for any
//! [`Reason`], is out on every replica with the same Redis and prefix at most one sync
//! interval (250 ms) and two round trips later, for the same time (two replicas that
//! disagree end with the longer cooldown); a [`PoolHandle::reset`] on one puts it back on
//! all. Members are named in Redis by their name and their key's fingerprint, never by the
//! key. Calls never wait on Redis: a background task publishes and reads while picking reads
//! memory. When Redis does not answer (250 ms command timeout), each replica goes on alone,
//! says so once, and shares again — its cooldowns included — when Redis answers. Health scores
//! stay per process. How and why (polling, not pub/sub), and the consistency, are in
//! [`fleet`].
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn demo<S: Clone>(client: S) -> Result<(), tollgate_core::BoxError> {
//! use tollgate_core::Secret;
//! use tollgate_pool::{Member, Pool, RedisPoolState};
//!
//! let shared = RedisPoolState::connect("redis://redis.internal:6379").await?;
//! let pool = Pool::builder()
//!     .member(Member::key("openai-a", Secret::new("sk-a")), client.clone())
//!     .member(Member::key("openai-b", Secret::new("sk-b")), client)
//!     .with_shared(shared)
//!     .build();
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// The fleet's items are documented with the `redis` feature (docs.rs and CI build all).
#![cfg_attr(not(feature = "redis"), allow(rustdoc::broken_intra_doc_links))]

mod affinity;
mod builder;
mod config;
mod exhausted;
mod failover;
#[cfg(feature = "redis")]
pub mod fleet;
mod health;
mod member;
mod memory;
mod metrics;
mod pool;
mod select;
mod sharing;

pub use self::affinity::{Affinity, AffinityConfig};
pub use self::builder::PoolBuilder;
pub use self::config::{ConfiguredMember, MemberConfig, PoolConfig};
pub use self::exhausted::NoMemberAvailable;
pub use self::failover::{ResponseFuture, WhenExhausted};
#[cfg(feature = "redis")]
pub use self::fleet::RedisPoolState;
pub use self::health::{Cooldowns, Counters, MemberState, Reason};
pub use self::member::{Adapter, Auth, Member, Rewrite};
pub use self::pool::{MemberReport, Pool, PoolHandle, Served};
pub use self::select::Policy;
