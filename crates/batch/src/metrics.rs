//! What the batcher records through the `metrics` facade (feature `metrics`; every name is in
//! `docs/metrics.md`). Without the feature these functions do nothing.
//!
//! Recorded once per flush, not per request, with the provider and model of the flush's first
//! member (members of one flush share a model: it is part of every codec's key).
//! `tollgate_batch_items_total − tollgate_batch_upstream_calls_total` is the calls saved.

use tollgate_core::LlmRequest;

#[cfg(feature = "metrics")]
fn labels(llm: Option<&LlmRequest>) -> Vec<metrics::Label> {
    tollgate_core::metrics::metric_labels(llm).to_vec()
}

/// A flush of `members` requests.
#[cfg_attr(not(feature = "metrics"), inline(always))]
pub(crate) fn flushed(llm: Option<&LlmRequest>, members: usize) {
    #[cfg(feature = "metrics")]
    {
        let labels = labels(llm);
        metrics::counter!("tollgate_batch_items_total", labels.clone()).increment(members as u64);
        metrics::histogram!("tollgate_batch_size", labels).record(members as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (llm, members);
}

/// One upstream call: a merged batch, a member sent alone, or one sent again alone.
#[cfg_attr(not(feature = "metrics"), inline(always))]
pub(crate) fn upstream_call(llm: Option<&LlmRequest>) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_batch_upstream_calls_total", labels(llm)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = llm;
}
