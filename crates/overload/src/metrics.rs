//! What the overload layer records through the `metrics` facade (feature `metrics`; every name
//! is in `docs/metrics.md`). Without the feature [`ScopeMetrics`] is empty and its methods do
//! nothing, so call sites need no `cfg`.
//!
//! Each scope registers its handles when its controller is made: a call costs two gauge
//! updates (in flight up, then down) and the limit's gauge set. Transitions are rare, so their
//! counter is looked up when one happens.

#[cfg(not(feature = "metrics"))]
use tollgate_core::Scope;

use crate::detector::OverloadState;

/// The `tollgate_overload_state` gauge's value.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const fn gauge_value(state: OverloadState) -> f64 {
    match state {
        OverloadState::Normal => 0.0,
        OverloadState::Warning => 1.0,
        OverloadState::Critical => 2.0,
        OverloadState::Recovering => 3.0,
    }
}

#[cfg(feature = "metrics")]
mod on {
    use metrics::{Counter, Gauge, Label};
    use tollgate_core::Scope;
    use tollgate_core::metrics::scope_labels;

    use super::gauge_value;
    use crate::detector::OverloadState;

    /// One scope's handles.
    #[derive(Debug)]
    pub(crate) struct ScopeMetrics {
        labels: [Label; 2],
        limit: Gauge,
        in_flight: Gauge,
        state: Gauge,
        throttled: [Counter; 2],
    }

    impl ScopeMetrics {
        pub(crate) fn new(scope: &Scope, limit: usize) -> Self {
            let labels = scope_labels(scope.provider().as_str(), scope.model());
            let throttled = ["interactive", "batch"].map(|priority| {
                let mut with = labels.to_vec();
                with.push(Label::from_static_parts("priority", priority));
                metrics::counter!("tollgate_overload_throttled_total", with)
            });
            let this = Self {
                limit: metrics::gauge!("tollgate_overload_limit", labels.to_vec()),
                in_flight: metrics::gauge!("tollgate_overload_in_flight", labels.to_vec()),
                state: metrics::gauge!("tollgate_overload_state", labels.to_vec()),
                throttled,
                labels,
            };
            this.limit.set(limit as f64);
            this.state.set(gauge_value(OverloadState::Normal));
            this
        }

        pub(crate) fn limit(&self, limit: usize) {
            self.limit.set(limit as f64);
        }

        pub(crate) fn started(&self) {
            self.in_flight.increment(1.0);
        }

        pub(crate) fn finished(&self) {
            self.in_flight.decrement(1.0);
        }

        /// The throttle shed a request here (`batch`: a batch-priority one).
        pub(crate) fn throttled(&self, batch: bool) {
            self.throttled[usize::from(batch)].increment(1);
        }

        pub(crate) fn transition(&self, from: OverloadState, to: OverloadState) {
            self.state.set(gauge_value(to));
            let mut labels = self.labels.to_vec();
            labels.extend([
                Label::from_static_parts("from", from.as_str()),
                Label::from_static_parts("to", to.as_str()),
            ]);
            metrics::counter!("tollgate_overload_transitions_total", labels).increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::ScopeMetrics;

/// Nothing to record without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct ScopeMetrics;

#[cfg(not(feature = "metrics"))]
impl ScopeMetrics {
    #[inline(always)]
    pub(crate) fn new(_: &Scope, _: usize) -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn limit(&self, _: usize) {}
    #[inline(always)]
    pub(crate) fn started(&self) {}
    #[inline(always)]
    pub(crate) fn finished(&self) {}
    #[inline(always)]
    pub(crate) fn throttled(&self, _: bool) {}
    #[inline(always)]
    pub(crate) fn transition(&self, _: OverloadState, _: OverloadState) {}
}
