//! Classify once, next to the wire: every response becomes an [`Outcome`](crate::Outcome) and
//! a [`RateLimitSnapshot`](crate::RateLimitSnapshot).
//!
//! [`ClassifyLayer`] sits innermost, right above the HTTP client. For each response it reads
//! the provider's rate-limit headers, peeks at most 64 KiB of an error body to tell a quota
//! that is gone (`insufficient_quota`) from a limit that resets in a second, stores both in the
//! response extensions, and wraps the body in an [`ObservedBody`](crate::body::ObservedBody)
//! that reports usage and late errors when the stream ends. The caller gets the body unchanged.
//!
//! The same rules are plain functions — [`classify_response`], [`classify_error`] for transport
//! errors, [`classify_stream_error`] for an SSE error event — for a layer used on its own.
//!
//! ```
//! use std::time::SystemTime;
//! use http::{HeaderMap, StatusCode};
//! use tollgate_core::{classify::classify_response, OutcomeKind};
//!
//! let body = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
//! let outcome = classify_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body, SystemTime::now());
//! assert_eq!(outcome.kind, OutcomeKind::QuotaExhausted);
//! assert!(!outcome.is_retryable());
//! ```
//!
//! The rest of this page is `docs/outcomes.md`: the full contract.
//!
#![doc = include_str!("../../../../docs/outcomes.md")]

pub mod future;
mod layer;
mod rules;

pub use self::layer::{Classify, ClassifyLayer, DEFAULT_PEEK_LIMIT};
pub use self::rules::{
    classify_error, classify_response, classify_stream_error, is_deadline_expiry, is_local_refusal,
    response_outcome,
};
