//! What the deferred queue records through the `metrics` facade (feature `metrics`; every name
//! is in `docs/metrics.md`). Without the feature these functions do nothing.

/// Whether metrics are recorded: work done only for them (reading the queue's depth from the
/// store) is skipped when not.
pub(crate) const ENABLED: bool = cfg!(feature = "metrics");

/// The queue holds `pending` jobs not yet sent.
#[cfg_attr(not(feature = "metrics"), inline(always))]
pub(crate) fn pending(pending: u64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tollgate_deferred_pending").set(pending as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = pending;
}
