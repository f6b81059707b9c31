//! Money for LLM calls: what each call costs, and budgets that hold.
//!
//! A rate limit keeps a key under the provider's pace; it does not stop a tenant from
//! spending $3,000 overnight. This crate counts **dollars** (and tokens) per tenant, per
//! model and overall, over calendar days and months or a rolling period, and refuses a call
//! *before it is sent* when a budget cannot hold it:
//!
//! - **reserve the worst case**: a call reserves what it could cost at most — its input
//!   estimate (with a margin) and its output cap at the model's price ([`WorstCase`]) — in
//!   every budget whose [`BudgetScope`] it matches, all or nothing. Because each admission
//!   counts the worst case of every call in flight, a thousand concurrent calls cannot
//!   together pass a limit;
//! - **charge the actual cost**: when the body ends (a stream's last event), the reservation
//!   is replaced by the usage the provider reported at the model's [`Price`] — cached input
//!   at its own price — exactly, in integer picodollars ([`Usd`]); the [`CallCost`] in the
//!   response extensions says both. A call whose cost is unknown is charged what the provider
//!   may have billed (see "What a call is charged" below);
//! - **prices shipped and overridable**: a [`PriceTable`] of the common OpenAI, Anthropic,
//!   Gemini and Mistral models, with dated snapshots priced as their model; override or
//!   extend it in [`PricesConfig`];
//! - **spend that survives a restart**: spend per window slot in a [`SpendStore`] —
//!   [`MemoryStore`], or [`RedbStore`] with the `redb` feature;
//! - **budgets that hold across a fleet**: with the `redis` feature, `RedisBooks` keeps the
//!   books of every process that shares a Redis in one place, reservations included (see the
//!   `redis` module and `docs/budgets.md`, "A fleet: budgets in Redis").
//!
//! A refused call fails with [`BudgetExceeded`]: which budget, its limit, what is spent and
//! reserved, and when it resets.
//!
//! # Where it sits
//!
//! Below [`AnnotateLayer`](tollgate_core::annotate::AnnotateLayer) (it reads the
//! [`LlmRequest`](tollgate_core::LlmRequest): provider, model, input estimate, output cap),
//! below the layer that sets the [`Tenant`] (the gateway) and below a cache (a hit costs
//! nothing), above retries and routing (each client call is counted once), and with
//! [`ClassifyLayer`](tollgate_core::classify::ClassifyLayer) somewhere below it, which puts
//! the [`EndOfStream`](tollgate_core::body::EndOfStream) handle in the response that the
//! usage is read from. Without `ClassifyLayer`, every successful call is charged its worst
//! case. A request without an `LlmRequest` is passed through and counted nowhere.
//!
//! ```
//! use tollgate_budget::{BudgetConfig, BudgetLayer, BudgetScope, BudgetSpec, CalendarWindow};
//! use tollgate_core::{annotate::AnnotateLayer, classify::ClassifyLayer};
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S) -> impl Sized {
//! let config = BudgetConfig {
//!     budgets: vec![BudgetSpec {
//!         name: "acme-daily".into(),
//!         scope: BudgetScope::Tenant("acme".into()),
//!         usd: Some(25.0),
//!         window: Some(CalendarWindow::Day),
//!         soft_threshold: Some(0.8),
//!         ..BudgetSpec::default()
//!     }],
//!     ..BudgetConfig::default()
//! };
//! let stack = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(BudgetLayer::configured(&config).expect("a valid config"))
//!     // ... retry, pool, rate limit ...
//!     .layer(ClassifyLayer::new())
//!     .service(client);
//! # stack }
//! ```
//!
//! # What a call is charged
//!
//! See the [`reservation`] module: the usage when the provider reported it; nothing when the
//! call was refused or never left; its worst case when it may have been billed and the
//! usage is unknown (a stream without usage, a body that broke, a call given up in flight).
//!
//! # Tenants
//!
//! The tenant is [`tollgate_cache::Tenant`], the request extension the cache already keys
//! by: one extension, set once by whoever knows the caller (the gateway, from its key), is
//! read by both layers. Depending on `tollgate-cache` for it costs a compile of the cache
//! crate; the type belongs in `tollgate-core` and should move there.
//!
//! Feature `metrics`: `tollgate_spend_usd_total{tenant, provider, model}`,
//! `tollgate_budget_refusals_total{budget}`, `tollgate_budget_remaining_usd{budget}` and
//! `tollgate_budget_soft_threshold_total{budget}` through the
//! [`metrics`](https://docs.rs/metrics) facade (see `docs/budgets.md`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budgets;
mod config;
pub mod cost;
pub mod error;
pub mod future;
#[doc = include_str!("../../../docs/budgets.md")]
pub mod guide {}
mod layer;
mod ledger;
mod memory;
mod metrics;
pub mod price;
#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "redis")]
pub mod redis;
pub mod reservation;
mod service;
pub mod store;
mod usd;
pub mod window;

pub use self::budgets::{BudgetScope, BudgetSnapshot};
pub use self::config::{BudgetConfig, BudgetSpec, CalendarWindow, ModelPrice, PricesConfig};
pub use self::cost::{
    CallCost, ChargeBasis, Charged, DEFAULT_INPUT_MARGIN_PERCENT, DEFAULT_OUTPUT_TOKENS, WorstCase,
};
pub use self::error::BudgetExceeded;
#[cfg(feature = "redis")]
pub use self::error::BudgetUnavailable;
pub use self::layer::{BudgetLayer, LocalBooks};
pub use self::ledger::{Amount, Limits, Spend};
pub use self::memory::MemoryStore;
pub use self::price::{Price, PriceTable, UnknownModel, UnpricedModel};
#[cfg(feature = "redb")]
pub use self::redb::RedbStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisBooks;
pub use self::service::Budget;
pub use self::store::{SpendStore, StoreError};
pub use self::usd::Usd;
pub use self::window::{WallClock, Window};
pub use tollgate_cache::Tenant;
