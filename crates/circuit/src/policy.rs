//! Which outcomes count as failures.

use tollgate_core::{Outcome, OutcomeKind};

/// Decides which outcomes count against a breaker.
pub trait FailurePolicy: Clone + Send + Sync + 'static {
    /// Whether `outcome` is a failure of the upstream (and not of the request).
    fn is_failure(&self, outcome: &Outcome) -> bool;
}

/// The default: overloaded, server error, timeout, connect error and connection lost are
/// failures; a rate limit
/// is not (the limiter handles it) unless configured; client errors, auth, exhausted quota,
/// oversize requests and context length never are — they say nothing about the upstream's
/// health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultPolicy {
    rate_limited_is_failure: bool,
}

impl DefaultPolicy {
    /// The default policy.
    pub const fn new() -> Self {
        Self {
            rate_limited_is_failure: false,
        }
    }

    /// Counts 429 rate limits as failures too.
    pub const fn counting_rate_limits(mut self) -> Self {
        self.rate_limited_is_failure = true;
        self
    }
}

impl FailurePolicy for DefaultPolicy {
    fn is_failure(&self, outcome: &Outcome) -> bool {
        match outcome.kind {
            OutcomeKind::Overloaded
            | OutcomeKind::ServerError
            | OutcomeKind::Timeout
            | OutcomeKind::ConnectError
            | OutcomeKind::ConnectionLost => true,
            OutcomeKind::RateLimited(_) => self.rate_limited_is_failure,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::RateLimitDimension;

    use super::*;

    #[test]
    fn the_default_counts_the_upstream_only() {
        let policy = DefaultPolicy::new();
        let kinds = [
            (OutcomeKind::Overloaded, true),
            (OutcomeKind::ServerError, true),
            (OutcomeKind::Timeout, true),
            (OutcomeKind::ConnectError, true),
            (OutcomeKind::ConnectionLost, true),
            (OutcomeKind::RateLimited(RateLimitDimension::Tokens), false),
            (OutcomeKind::QuotaExhausted, false),
            (OutcomeKind::RequestTooLarge, false),
            (OutcomeKind::ClientError, false),
            (OutcomeKind::AuthError, false),
            (OutcomeKind::ContextLengthExceeded, false),
            (OutcomeKind::Success, false),
        ];
        for (kind, failure) in kinds {
            assert_eq!(policy.is_failure(&Outcome::new(kind)), failure, "{kind:?}");
        }
        let strict = policy.counting_rate_limits();
        assert!(strict.is_failure(&Outcome::new(OutcomeKind::RateLimited(
            RateLimitDimension::Requests
        ))));
    }
}
