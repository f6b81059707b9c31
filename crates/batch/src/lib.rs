//! Micro-batching for LLM calls: many small requests, few upstream calls.
//!
//! [`BatchLayer`] holds mergeable requests for a moment and sends those that share a key as
//! one upstream request: a flush happens when a batch reaches its size (items, e.g. embedding
//! inputs) or token cap, or when its oldest member has waited `max_wait`, whichever is first.
//! Each caller gets its own response, cut from the merged one; when the merged call fails,
//! every member gets that failure ([`BatchFailed`], with the original error as its source, or a
//! copy of the upstream's error response). A caller that gives up before the flush is left
//! out of it; one that gives up after has its share discarded.
//!
//! How requests merge is a [`BatchCodec`]. [`EmbeddingsCodec`] merges OpenAI-style
//! `/v1/embeddings` requests with identical model and options into one array request (up to
//! 2,048 inputs and 300,000 tokens) and splits the vectors back by index and the usage in
//! proportion. [`GeminiEmbeddingsCodec`] merges Gemini `:embedContent` calls into one
//! `:batchEmbedContents` call of up to 100 requests. [`PromptPackingCodec`] (opt-in) packs short, independent chat prompts into one
//! call that answers them as a JSON array, validated on the way back; a member whose answer is
//! missing is sent again alone.
//!
//! The queue is bounded: `poll_ready` waits for room, or with [`WhenFull::Fail`] a request fails
//! at once with [`QueueFull`]. The batch size can follow a per-scope signal — tollgate-overload's
//! recommended batch size shrinks under errors and is 1 while the breaker is open:
//!
//! ```
//! use tollgate_batch::{BatchConfig, BatchLayer, EmbeddingsCodec};
//! use tollgate_core::annotate::AnnotateLayer;
//! use tower::ServiceBuilder;
//!
//! # fn wrap<S>(client: S, overload: tollgate_overload::OverloadHandle) -> impl Sized
//! # where S: Clone {
//! let batch = BatchLayer::with_config(EmbeddingsCodec, BatchConfig::default())
//!     .with_size_signal(move |scope, max| {
//!         overload.recommended_batch_size(scope, max as usize) as u32
//!     });
//! let stack = ServiceBuilder::new()
//!     .layer(AnnotateLayer::new())
//!     .layer(batch)
//!     .service(client);
//! # stack }
//! ```
//!
//! The worker is a task on the runtime of the first call.
//!
//! Work that can wait hours, sent through a provider's Batch API at half price and kept on disk
//! across restarts, is not micro-batching: that is the deferred queue, `tollgate-deferred`.
//!
//! Feature `metrics`: members and upstream calls per flush (their difference is the calls
//! saved) through the [`metrics`](https://docs.rs/metrics) facade (`tollgate_batch_*`, see
//! `docs/metrics.md`).
#![forbid(unsafe_code)]

mod codec;
mod embeddings;
mod error;
mod gemini;
mod group_key;
mod layer;
mod metrics;
mod packing;
mod service;
mod worker;

pub use self::codec::{BatchCodec, Part, Weight};
pub use self::embeddings::{
    EmbeddingsCodec, EmbeddingsKey, EmbeddingsMember, MAX_INPUTS, MAX_TOKENS,
};
pub use self::error::{BatchFailed, BatcherClosed, QueueFull};
pub use self::gemini::{GEMINI_MAX_REQUESTS, GeminiEmbeddingsCodec, GeminiKey, GeminiMember};
pub use self::layer::{BatchConfig, BatchLayer, SizeSignal, WhenFull};
pub use self::packing::{PackingKey, PackingMember, PromptPackingCodec};
pub use self::service::{Batch, BatchBody, ResponseFuture};
