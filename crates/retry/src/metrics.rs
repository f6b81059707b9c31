//! What the retry layer records through the `metrics` facade (feature `metrics`; every name is
//! in `docs/metrics.md`). Without the feature these functions do nothing.
//!
//! Nothing is recorded on the common path, a first attempt that succeeds; retries, give-ups
//! and hedges are rare enough to look their handle up when they happen.

use std::time::Duration;

use tollgate_core::LlmRequest;

/// Why the layer stopped retrying a request that had not succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// `max_attempts` made.
    AttemptsExhausted,
    /// The next wait would pass the deadline.
    Deadline,
    /// The retry budget had nothing left.
    BudgetExhausted,
    /// The request may have been processed, and sending it again is not safe
    /// ([`Repeat`](tollgate_core::Repeat)).
    UnsafeToResend,
}

impl GaveUp {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    const fn as_str(self) -> &'static str {
        match self {
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::Deadline => "deadline",
            Self::BudgetExhausted => "budget_exhausted",
            Self::UnsafeToResend => "unsafe_to_resend",
        }
    }
}

#[cfg(feature = "metrics")]
fn labels(llm: Option<&LlmRequest>) -> Vec<metrics::Label> {
    tollgate_core::metrics::metric_labels(llm).to_vec()
}

/// Another attempt follows one that ended in `reason` (an outcome kind), after `wait`.
#[cfg_attr(not(feature = "metrics"), inline(always))]
pub(crate) fn retrying(llm: Option<&LlmRequest>, reason: &'static str, wait: Duration) {
    #[cfg(feature = "metrics")]
    {
        let mut with_reason = labels(llm);
        metrics::histogram!("tollgate_retry_backoff_seconds", with_reason.clone())
            .record(wait.as_secs_f64());
        with_reason.push(metrics::Label::from_static_parts("reason", reason));
        metrics::counter!("tollgate_retry_attempts_total", with_reason).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (llm, reason, wait);
}

/// The layer gave up on a request that could have been retried.
#[cfg_attr(not(feature = "metrics"), inline(always))]
pub(crate) fn gave_up(llm: Option<&LlmRequest>, why: GaveUp) {
    #[cfg(feature = "metrics")]
    {
        let mut labels = labels(llm);
        labels.push(metrics::Label::from_static_parts("why", why.as_str()));
        metrics::counter!("tollgate_retry_gave_up_total", labels).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (llm, why);
}

/// A hedged (backup) attempt was sent.
#[cfg_attr(not(feature = "metrics"), inline(always))]
pub(crate) fn hedged(llm: Option<&LlmRequest>) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_retry_hedges_total", labels(llm)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = llm;
}
