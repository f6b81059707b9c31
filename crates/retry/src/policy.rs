//! Which outcomes are worth another attempt.
//!
//! A policy judges the outcome alone: can another attempt succeed? Whether the request may be
//! *sent* again is a separate rule the layer applies after it, whatever the policy:
//! [`Repeat`](tollgate_core::Repeat) keeps an upload, a batch creation or an unknown `POST`
//! from being sent twice after a failure that may have been processed, and a billed call from
//! being resent after a lost connection unless the layer opts in — a resent call may be billed
//! twice (see the [crate docs](crate#why-a-retry-can-cost-twice)).

use tollgate_core::Outcome;

/// Decides whether an attempt's outcome is worth retrying.
pub trait RetryPolicy: Clone + Send + Sync + 'static {
    /// Whether another attempt can succeed.
    fn should_retry(&self, outcome: &Outcome) -> bool;
}

/// The default: rate limited, overloaded, server error, timeout, connect error and connection
/// lost are retried (and anything the provider marks `x-should-retry: true`); never an
/// exhausted quota, an oversize request, an auth or client error, or a prompt over the context
/// length — retrying those only costs money. This is [`Outcome::is_retryable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultRetryPolicy;

impl RetryPolicy for DefaultRetryPolicy {
    fn should_retry(&self, outcome: &Outcome) -> bool {
        outcome.is_retryable()
    }
}
