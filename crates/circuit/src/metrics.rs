//! What the breaker records through the `metrics` facade (feature `metrics`; every name is in
//! `docs/metrics.md`). Without the feature [`BreakerMetrics`] is empty and its methods do
//! nothing, so call sites need no `cfg`.
//!
//! Each circuit registers its handles when it is made and keeps them: a refused call costs an
//! atomic add. Transitions are rare, so their counter is looked up when one happens.

#[cfg(not(feature = "metrics"))]
use tollgate_core::Scope;

use crate::state::{CircuitState, Reason};

/// The `tollgate_circuit_state` gauge's value: 0 closed, 1 open, 2 half-open. A circuit forced
/// open counts as open; disabled and metrics-only ones, which refuse nothing, as closed.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const fn gauge_value(state: CircuitState) -> f64 {
    match state {
        CircuitState::Open | CircuitState::ForcedOpen => 1.0,
        CircuitState::HalfOpen => 2.0,
        CircuitState::Closed | CircuitState::Disabled | CircuitState::MetricsOnly => 0.0,
    }
}

/// The `reason` label of a transition.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const fn reason_label(reason: Reason) -> &'static str {
    match reason {
        Reason::ConsecutiveFailures => "consecutive_failures",
        Reason::FailureRate => "failure_rate",
        Reason::SlowCallRate => "slow_call_rate",
        Reason::OpenPeriodOver => "open_period_over",
        Reason::ProbesSucceeded => "probes_succeeded",
        Reason::ProbeFailed => "probe_failed",
        Reason::Manual => "manual",
        Reason::Fleet => "fleet",
    }
}

#[cfg(feature = "metrics")]
mod on {
    use metrics::{Counter, Gauge, Label};
    use tollgate_core::Scope;
    use tollgate_core::metrics::scope_labels;

    use super::{gauge_value, reason_label};
    use crate::state::{CircuitState, Reason};

    /// One circuit's handles.
    #[derive(Debug)]
    pub(crate) struct BreakerMetrics {
        labels: [Label; 2],
        state: Gauge,
        rejected: Counter,
    }

    impl BreakerMetrics {
        pub(crate) fn new(scope: &Scope, state: CircuitState) -> Self {
            let labels = scope_labels(scope.provider().as_str(), scope.model());
            let gauge = metrics::gauge!("tollgate_circuit_state", labels.to_vec());
            gauge.set(gauge_value(state));
            Self {
                rejected: metrics::counter!("tollgate_circuit_rejected_total", labels.to_vec()),
                state: gauge,
                labels,
            }
        }

        /// A call was refused because the circuit is open.
        pub(crate) fn rejected(&self) {
            self.rejected.increment(1);
        }

        /// The circuit went from `from` to `to`.
        pub(crate) fn transition(&self, from: CircuitState, to: CircuitState, reason: Reason) {
            self.state.set(gauge_value(to));
            let mut labels = self.labels.to_vec();
            labels.extend([
                Label::from_static_parts("from", from.as_str()),
                Label::from_static_parts("to", to.as_str()),
                Label::from_static_parts("reason", reason_label(reason)),
            ]);
            metrics::counter!("tollgate_circuit_transitions_total", labels).increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::BreakerMetrics;

/// Nothing to record without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct BreakerMetrics;

#[cfg(not(feature = "metrics"))]
impl BreakerMetrics {
    #[inline(always)]
    pub(crate) fn new(_: &Scope, _: CircuitState) -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn rejected(&self) {}
    #[inline(always)]
    pub(crate) fn transition(&self, _: CircuitState, _: CircuitState, _: Reason) {}
}
