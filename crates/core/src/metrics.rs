//! What [`Classify`](crate::classify::Classify) records through the `metrics` facade (feature
//! `metrics`; every name is in `docs/metrics.md`). Without the feature these types are empty and
//! their methods do nothing, so call sites need no `cfg`.
//!
//! Handles are registered once per scope and outcome and kept, so a call costs a map lookup and
//! an atomic add, not a label allocation. They bind to the recorder installed when first used:
//! install the exporter before the first request.

#[cfg(not(feature = "metrics"))]
use std::time::Duration;

#[cfg(not(feature = "metrics"))]
use crate::body::EndOfStream;
#[cfg(not(feature = "metrics"))]
use crate::{LlmRequest, OutcomeKind};

/// The `outcome` label of a call that ended in a transport error rather than a response.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const TRANSPORT_ERROR: &str = "transport_error";

/// The `outcome` label of a successful answer whose body the caller dropped before its end
/// (or cut with its own deadline): nothing known went wrong, nor was it all delivered.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const CANCELLED: &str = "cancelled";

/// The `provider` and `model` labels every layer's metrics carry, from a request's
/// [`LlmRequest`](crate::LlmRequest) (`provider="unknown"` without one, `model="-"` when it names none). Never a
/// credential: the key and its id stay out of metrics.
#[cfg(feature = "metrics")]
pub fn metric_labels(llm: Option<&crate::LlmRequest>) -> [metrics::Label; 2] {
    match llm {
        Some(llm) => scope_labels(llm.provider.as_str(), llm.model.as_deref()),
        None => scope_labels("unknown", None),
    }
}

/// As [`metric_labels`], for a provider's name and a model. The model is named only as
/// [`model_labels`](crate::model_labels::model_labels) allows (known, listed, or within the
/// allowance of unlisted names); any other is `model="other"`, so callers cannot grow the
/// number of series without bound.
#[cfg(feature = "metrics")]
pub fn scope_labels(provider: &'static str, model: Option<&str>) -> [metrics::Label; 2] {
    let model = model.map_or("-", |m| crate::model_labels::model_labels().label(m));
    [
        metrics::Label::from_static_parts("provider", provider),
        metrics::Label::new("model", model.to_owned()),
    ]
}

#[cfg(feature = "metrics")]
mod on {
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use metrics::{Counter, Histogram, Label};

    use super::{CANCELLED, TRANSPORT_ERROR};
    use crate::body::{EndOfStream, EndReason};
    use crate::{LlmRequest, OutcomeKind, ScopeMode, ScopeRegistry};

    /// Scopes whose handles are kept; past it, unused ones are dropped and registered again
    /// when next seen (the recorder keeps the values).
    const MAX_SCOPES: usize = 4096;
    /// A slot per `OutcomeKind`, then `transport_error` and `cancelled`.
    const OUTCOMES: usize = 14;
    const TRANSPORT_ERROR_SLOT: usize = 12;
    const CANCELLED_SLOT: usize = 13;

    /// Per-scope handles, shared by the clones of one layer.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct ClassifyMetrics {
        scopes: Arc<ScopeMapCell>,
    }

    #[derive(Debug)]
    struct ScopeMapCell {
        /// Handles can always be dropped: the recorder keeps the values.
        scopes: ScopeRegistry<Handles>,
        unscoped: OnceLock<Arc<Handles>>,
    }

    impl Default for ScopeMapCell {
        fn default() -> Self {
            Self {
                scopes: ScopeRegistry::new(
                    ScopeMode::PerScope {
                        max_scopes: MAX_SCOPES,
                    },
                    |scope, _| Handles::new(scope.provider().as_str(), scope.model()),
                    |_| true,
                ),
                unscoped: OnceLock::new(),
            }
        }
    }

    #[derive(Debug)]
    struct Handles {
        labels: [Label; 2],
        outcomes: [OnceLock<Counter>; OUTCOMES],
        duration: Histogram,
    }

    impl Handles {
        fn new(provider: &'static str, model: Option<&str>) -> Self {
            let labels = super::scope_labels(provider, model);
            let duration = metrics::histogram!("tollgate_request_duration_seconds", labels.iter());
            Self {
                labels,
                outcomes: Default::default(),
                duration,
            }
        }

        fn count(&self, slot: usize, outcome: &'static str) {
            self.outcomes[slot]
                .get_or_init(|| {
                    let labels = self
                        .labels
                        .iter()
                        .cloned()
                        .chain([Label::from_static_parts("outcome", outcome)])
                        .collect::<Vec<_>>();
                    metrics::counter!("tollgate_requests_total", labels)
                })
                .increment(1);
        }
    }

    impl ClassifyMetrics {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn for_request(&self, llm: Option<&LlmRequest>) -> CallMetrics {
            let handles = match llm {
                Some(llm) => self.scopes.scopes.get_for(llm),
                None => self
                    .scopes
                    .unscoped
                    .get_or_init(|| Arc::new(Handles::new("unknown", None)))
                    .clone(),
            };
            CallMetrics(handles)
        }
    }

    /// The handles of one call's scope.
    #[derive(Debug)]
    pub(crate) struct CallMetrics(Arc<Handles>);

    impl CallMetrics {
        pub(crate) fn response(&self, kind: OutcomeKind, elapsed: impl FnOnce() -> Duration) {
            self.0.count(slot(kind), kind.as_str());
            self.0.duration.record(elapsed().as_secs_f64());
        }

        /// A successful head: timed now, counted when its body ends, by how it ended (an
        /// error event after a 200, a cut-off stream, or a caller who dropped it).
        pub(crate) fn success_head(&self, elapsed: impl FnOnce() -> Duration, end: &EndOfStream) {
            self.0.duration.record(elapsed().as_secs_f64());
            let handles = Arc::clone(&self.0);
            end.on_end(move |end| match (&end.error, end.reason) {
                (Some(outcome), _) => handles.count(slot(outcome.kind), outcome.kind.as_str()),
                (None, EndReason::Dropped) => handles.count(CANCELLED_SLOT, CANCELLED),
                (None, _) => handles.count(slot(OutcomeKind::Success), "success"),
            });
        }

        pub(crate) fn transport_error(&self, elapsed: impl FnOnce() -> Duration) {
            self.0.count(TRANSPORT_ERROR_SLOT, TRANSPORT_ERROR);
            self.0.duration.record(elapsed().as_secs_f64());
        }
    }

    const fn slot(kind: OutcomeKind) -> usize {
        match kind {
            OutcomeKind::Success => 0,
            OutcomeKind::RateLimited(_) => 1,
            OutcomeKind::QuotaExhausted => 2,
            OutcomeKind::RequestTooLarge => 3,
            OutcomeKind::ContextLengthExceeded => 4,
            OutcomeKind::Overloaded => 5,
            OutcomeKind::ServerError => 6,
            OutcomeKind::Timeout => 7,
            OutcomeKind::ConnectError => 8,
            OutcomeKind::AuthError => 9,
            OutcomeKind::ClientError => 10,
            OutcomeKind::ConnectionLost => 11,
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::{CallMetrics, ClassifyMetrics};

/// Nothing to keep without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
#[derive(Clone, Debug, Default)]
pub(crate) struct ClassifyMetrics;

#[cfg(not(feature = "metrics"))]
impl ClassifyMetrics {
    #[inline(always)]
    pub(crate) const fn new() -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn for_request(&self, _: Option<&LlmRequest>) -> CallMetrics {
        CallMetrics
    }
}

/// Nothing to record without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct CallMetrics;

#[cfg(not(feature = "metrics"))]
impl CallMetrics {
    // The durations are closures: without the feature, the clock is not read at all.
    #[inline(always)]
    pub(crate) fn response(&self, _: OutcomeKind, _: impl FnOnce() -> Duration) {}

    #[inline(always)]
    pub(crate) fn success_head(&self, _: impl FnOnce() -> Duration, _: &EndOfStream) {}

    #[inline(always)]
    pub(crate) fn transport_error(&self, _: impl FnOnce() -> Duration) {}
}
