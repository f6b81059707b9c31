//! What the rate limiter records through the `metrics` facade (feature `metrics`; every name is
//! in `docs/metrics.md`). Without the feature [`ScopeMetrics`] is empty and its methods do
//! nothing, so call sites need no `cfg`.
//!
//! Each scope registers its handles once, on its first request, and keeps them in its
//! [`ScopeStats`](crate::ScopeStats): a request costs atomic adds, not label allocations.

#[cfg(not(feature = "metrics"))]
use tokio::time::Instant;

#[cfg(not(feature = "metrics"))]
use tollgate_core::Scope;

#[cfg(not(feature = "metrics"))]
use crate::store::Charges;

/// Why the limiter refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its turn would come after its max wait or its deadline.
    Wait,
    /// It can never fit the limit.
    ExceedsLimit,
}

#[cfg(feature = "metrics")]
mod on {
    use std::sync::OnceLock;

    use metrics::{Counter, Gauge, Histogram, Label};
    use tokio::time::Instant;
    use tollgate_core::Scope;
    use tollgate_core::metrics::scope_labels;

    use super::Refused;
    use crate::memory::QuotaSource;
    use crate::quota::Dimension;
    use crate::store::Charges;

    /// The token dimensions counted as reserved and used.
    const TOKEN_DIMENSIONS: [Dimension; 3] = [
        Dimension::Tokens,
        Dimension::InputTokens,
        Dimension::OutputTokens,
    ];

    /// A scope's handles, registered on its first request.
    #[derive(Debug, Default)]
    pub(crate) struct ScopeMetrics(OnceLock<Handles>);

    #[derive(Debug)]
    struct Handles {
        labels: [Label; 2],
        /// The quota of each dimension, by where it comes from: registered when first set.
        quota: [[OnceLock<Gauge>; 3]; 5],
        wait: Histogram,
        refused: [Counter; 2],
        reserved: [Counter; 3],
        used: [Counter; 3],
        pauses: Counter,
    }

    impl ScopeMetrics {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// Registers the handles of `scope`, once.
        pub(crate) fn init(&self, scope: &Scope) {
            self.0.get_or_init(|| {
                let labels = scope_labels(scope.provider().as_str(), scope.model());
                let with = |key: &'static str, value: &'static str| {
                    let mut all = labels.to_vec();
                    all.push(Label::from_static_parts(key, value));
                    all
                };
                let tokens = |name: &'static str| {
                    TOKEN_DIMENSIONS.map(|dimension| {
                        metrics::counter!(name, with("dimension", dimension.as_str()))
                    })
                };
                Handles {
                    quota: Default::default(),
                    wait: metrics::histogram!("tollgate_ratelimit_wait_seconds", labels.to_vec()),
                    refused: ["wait", "exceeds_limit"].map(|reason| {
                        metrics::counter!(
                            "tollgate_ratelimit_refused_total",
                            with("reason", reason)
                        )
                    }),
                    reserved: tokens("tollgate_ratelimit_tokens_reserved_total"),
                    used: tokens("tollgate_ratelimit_tokens_used_total"),
                    pauses: metrics::counter!("tollgate_ratelimit_pauses_total", labels.to_vec()),
                    labels,
                }
            });
        }

        /// A request that asked at `asked_at` got its capacity now and is sent, holding
        /// `charges`.
        pub(crate) fn admitted(&self, asked_at: Instant, charges: Charges) {
            if let Some(handles) = self.0.get() {
                let wait = Instant::now().saturating_duration_since(asked_at);
                handles.wait.record(wait.as_secs_f64());
                for (counter, dimension) in handles.reserved.iter().zip(TOKEN_DIMENSIONS) {
                    counter.increment(charges.get(dimension));
                }
            }
        }

        /// A request was refused.
        pub(crate) fn refused(&self, why: Refused) {
            if let Some(handles) = self.0.get() {
                handles.refused[why as usize].increment(1);
            }
        }

        /// An answer reported `used` tokens.
        pub(crate) fn used(&self, used: Charges) {
            if let Some(handles) = self.0.get() {
                for (counter, dimension) in handles.used.iter().zip(TOKEN_DIMENSIONS) {
                    counter.increment(used.get(dimension));
                }
            }
        }

        /// A provider's 429 paused the scope.
        pub(crate) fn paused(&self) {
            if let Some(handles) = self.0.get() {
                handles.pauses.increment(1);
            }
        }

        /// `dimension`'s quota is now `per_minute` a minute, from `source`; the gauges of its
        /// other sources, if any, go to 0.
        pub(crate) fn quota(&self, dimension: Dimension, source: QuotaSource, per_minute: f64) {
            let Some(handles) = self.0.get() else {
                return;
            };
            for (i, cell) in handles.quota[dimension.index()].iter().enumerate() {
                let this = QuotaSource::ALL[i];
                if this == source {
                    let gauge = cell.get_or_init(|| {
                        let mut labels = handles.labels.to_vec();
                        labels.push(Label::from_static_parts("dimension", dimension.as_str()));
                        labels.push(Label::from_static_parts("source", this.as_str()));
                        metrics::gauge!("tollgate_ratelimit_quota_per_minute", labels)
                    });
                    gauge.set(per_minute);
                } else if let Some(gauge) = cell.get() {
                    gauge.set(0.0);
                }
            }
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::ScopeMetrics;

/// Nothing to record without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Default)]
pub(crate) struct ScopeMetrics;

#[cfg(not(feature = "metrics"))]
impl ScopeMetrics {
    #[inline(always)]
    pub(crate) const fn new() -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn init(&self, _: &Scope) {}
    #[inline(always)]
    pub(crate) fn admitted(&self, _: Instant, _: Charges) {}
    #[inline(always)]
    pub(crate) fn refused(&self, _: Refused) {}
    #[inline(always)]
    pub(crate) fn used(&self, _: Charges) {}
    #[inline(always)]
    pub(crate) fn paused(&self) {}
    #[inline(always)]
    pub(crate) fn quota(&self, _: crate::quota::Dimension, _: crate::memory::QuotaSource, _: f64) {}
}
