//! A simulated LLM provider that behaves like the real ones under load.
//!
//! Every Tollgate layer is tested and benchmarked against it. It speaks five providers' APIs at
//! once, each with its exact rate-limit headers and error bodies (see `docs/scenarios/README.md`
//! for the routes):
//!
//! - OpenAI: `/v1/chat/completions` with JSON and SSE streaming, the Responses API
//!   (`/v1/responses`, JSON or its SSE event sequence), `/v1/embeddings`, the Models API
//!   (`GET /v1/models`, `GET /v1/models/{id}`, listing [`SimConfig::models`]), files and
//!   batches; or Mistral on the chat, embeddings and models routes with
//!   `openai_flavor = "mistral"` (`x-ratelimitbysize-*-minute` headers,
//!   `{"object":"error",...}` bodies);
//! - Anthropic: the Messages API (`/v1/messages`), message batches, and the Models API in
//!   Anthropic's shape for a request with an `anthropic-version` header;
//! - Gemini's native API: `/v1beta/models/{model}:generateContent`, `:streamGenerateContent`
//!   (SSE or a streamed JSON array), `:embedContent`, `:batchEmbedContents`, keys in
//!   `x-goog-api-key` or `?key=`, no rate-limit headers, 429s naming the quota hit
//!   (per minute or per day) with a `RetryInfo`;
//! - Azure OpenAI: `/openai/deployments/{deployment}/chat/completions` and `.../embeddings`
//!   with a required `api-version`, only `x-ratelimit-remaining-*` headers, and 429s with
//!   `retry-after`, `retry-after-ms` and `x-ms-retry-after-ms`.
//!
//! And it fails the way they fail:
//!
//! - per-key limits on requests, tokens, input and output tokens per minute and requests per
//!   day, charged at admission on the estimate (prompt + `max_tokens`) and corrected by the
//!   actual answer, in the shape of the common limiters (see [`config::Window`]):
//!   - token buckets holding a minute's quota (OpenAI, Anthropic), or a small `burst` (the
//!     classic gateway token bucket);
//!   - fixed windows of a few seconds (Azure OpenAI);
//!   - sliding windows, counted exactly (sliding-log gateways and proxies);
//!   - leaky buckets (GCRA) spacing requests at the rate, strictly or with a `burst` (nginx's
//!     `limit_req`, GCRA limiters);
//! - 429s with the wait rounded up (a client that waits exactly as told is admitted),
//!   exhausted quotas, "Request too large", 401 for unknown or revoked keys;
//! - keys that hide their rate-limit headers (`rate_limit_headers = false`): no rate-limit
//!   headers, no `retry-after`, only what the provider's 429 body says (OpenAI's "Please try
//!   again in 1.2s", Azure's "Please retry after 2 seconds", Gemini's `RetryInfo`), for clients
//!   that must learn a limit from its 429s alone;
//! - a hidden concurrency capacity beyond which requests are 529 `overloaded_error` (or 500
//!   "Overloaded", or 503), random 5xx, hangs, streams cut off or ended by an error event;
//! - batches that expire with partial results, and file uploads that fail with a 500;
//! - a latency model (time to first token, time per output token, a tail), and scripted phases
//!   (healthy → overloaded → recovering) from a TOML scenario (`docs/scenarios/`).
//!
//! And it caches prompts as OpenAI does, per key: a prompt of at least 1,024 tokens whose
//! prefix the same key sent within five minutes reports that prefix (in 128-token blocks) as
//! cached tokens, in each provider's usage field, and [`SimStats::cached_input_tokens`] counts
//! them, so the share a routing policy keeps cached is measurable (see
//! [`config::PromptCacheConfig`]).
//!
//! Everything random is drawn from a seeded generator, per request in arrival order; every
//! delay is `tokio::time`, so in-process tests with paused time are exact and instant.
//!
//! ```no_run
//! use tollgate_sim::{Sim, SimConfig};
//!
//! # async fn demo() -> Result<(), tollgate_core::BoxError> {
//! let sim = Sim::start(SimConfig::from_toml(r#"
//!     [[keys]]
//!     key = "sk-test"
//!     requests_per_minute = 60
//!     tokens_per_minute = 40000
//! "#)?).await?;
//! println!("POST {}/v1/chat/completions", sim.url());
//! // ... drive traffic ...
//! println!("{:?}", sim.stats());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod answer;
mod anthropic;
mod ask;
mod azure;
mod batch;
mod body;
pub mod config;
mod dialect;
mod gemini;
mod generate;
mod limiter;
mod mistral;
mod models;
mod openai;
mod prompt_cache;
mod respond;
mod responses;
mod route;
mod server;
mod service;
mod state;
mod stats;
mod text;

pub use self::batch::{BatchApi, BatchSummary};
pub use self::body::SimBody;
pub use self::config::SimConfig;
pub use self::server::{Sim, SimHandle};
pub use self::service::SimService;
pub use self::stats::{KeyUsage, LogEntry, Rejection, SimStats};
