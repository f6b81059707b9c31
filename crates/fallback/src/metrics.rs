//! What the fallback layer records through the `metrics` facade (feature `metrics`; every name
//! is in `docs/metrics.md`). Without the feature these functions do nothing.
//!
//! Fallbacks are rare: their counter is looked up when one happens.

/// A call was answered by the fallback service, for `trigger`.
#[inline]
pub(crate) fn fell_back(trigger: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_fallback_answers_total", "trigger" => trigger).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = trigger;
}
