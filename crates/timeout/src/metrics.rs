//! What the timeout layer records through the `metrics` facade (feature
//! `metrics`; every name is in `docs/metrics.md`). Without the feature [`TimeoutLabels`] is
//! empty and these functions do nothing, so call sites need no `cfg`.
//!
//! Timeouts are rare: their counter is looked up when one happens. A call keeps
//! only its provider and model (a copy and a reference count) for the labels.

use tollgate_core::LlmRequest;

use crate::error::Limit;

/// The provider and model a call's timeouts are labelled with.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimeoutLabels {
    #[cfg(feature = "metrics")]
    scope: Option<(tollgate_core::Provider, Option<std::sync::Arc<str>>)>,
}

impl TimeoutLabels {
    #[inline]
    pub(crate) fn of(llm: Option<&LlmRequest>) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = llm;
        Self {
            #[cfg(feature = "metrics")]
            scope: llm.map(|llm| (llm.provider, llm.model.clone())),
        }
    }

    /// `limit` ran out.
    #[inline]
    pub(crate) fn expired(&self, limit: Limit) {
        #[cfg(feature = "metrics")]
        {
            let mut labels = match &self.scope {
                Some((provider, model)) => {
                    tollgate_core::metrics::scope_labels(provider.as_str(), model.as_deref())
                }
                None => tollgate_core::metrics::metric_labels(None),
            }
            .to_vec();
            labels.push(metrics::Label::from_static_parts("limit", limit.as_str()));
            metrics::counter!("tollgate_timeout_expired_total", labels).increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = limit;
    }
}
