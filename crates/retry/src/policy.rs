//! Which outcomes are worth another attempt.

use tollgate_core::Outcome;

/// Decides whether an attempt's outcome is worth retrying.
pub trait RetryPolicy: Clone + Send + Sync + 'static {
    /// Whether another attempt can succeed.
    fn should_retry(&self, outcome: &Outcome) -> bool;
}

/// The default: rate limited, overloaded, server error, timeout and connect error are retried
/// (and anything the provider marks `x-should-retry: true`); never an exhausted quota, an
/// oversize request, an auth or client error, or a prompt over the context length — retrying
/// those only costs money. This is [`Outcome::is_retryable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultRetryPolicy;

impl RetryPolicy for DefaultRetryPolicy {
    fn should_retry(&self, outcome: &Outcome) -> bool {
        outcome.is_retryable()
    }
}
