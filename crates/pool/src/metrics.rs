//! What the pool records through the `metrics` facade (feature `metrics`; every name is in
//! `docs/metrics.md`). Without the feature [`MemberMetrics`] is empty and its methods do
//! nothing, so call sites need no `cfg`.
//!
//! Members are labelled by the name the operator gave them ([`Member::key`](crate::Member::key)
//! takes the name and the secret apart), never by their key. Each member's score gauge is
//! registered when the pool is built; cooldowns and failovers are rare, so their counters are
//! looked up when one happens; its affinity counters are registered at its first keyed pick.

use tollgate_core::OutcomeKind;

use crate::health::Reason;

/// Whether metrics are recorded: work done only for them (a score) is skipped when not.
pub(crate) const ENABLED: bool = cfg!(feature = "metrics");

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const fn reason_label(reason: Reason) -> &'static str {
    match reason {
        Reason::RateLimited => "rate_limited",
        Reason::Timeout => "timeout",
        Reason::ServerError => "server_error",
        Reason::AuthError => "auth_error",
        Reason::QuotaExhausted => "quota_exhausted",
        Reason::BreakerOpen => "breaker_open",
    }
}

/// One member's handles.
#[derive(Debug)]
pub(crate) struct MemberMetrics {
    #[cfg(feature = "metrics")]
    name: std::sync::Arc<str>,
    #[cfg(feature = "metrics")]
    score: metrics::Gauge,
    /// Its keys' picks, kept and moved; registered at the first (every call of a pool with
    /// affinity has one, and a pool without shows none).
    #[cfg(feature = "metrics")]
    affinity: std::sync::OnceLock<[metrics::Counter; 2]>,
}

impl MemberMetrics {
    pub(crate) fn new(name: &std::sync::Arc<str>) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = name;
        Self {
            #[cfg(feature = "metrics")]
            score: {
                let gauge =
                    metrics::gauge!("tollgate_pool_member_score", "member" => name.to_string());
                gauge.set(100.0);
                gauge
            },
            #[cfg(feature = "metrics")]
            name: name.clone(),
            #[cfg(feature = "metrics")]
            affinity: std::sync::OnceLock::new(),
        }
    }

    /// The member's health score now (0–100).
    #[inline]
    pub(crate) fn score(&self, score: u8) {
        #[cfg(feature = "metrics")]
        self.score.set(f64::from(score));
        #[cfg(not(feature = "metrics"))]
        let _ = score;
    }

    /// The member went out of rotation.
    #[inline]
    pub(crate) fn cooldown(&self, reason: Reason) {
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "tollgate_pool_cooldowns_total",
            "member" => self.name.to_string(),
            "reason" => reason_label(reason)
        )
        .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = reason;
    }

    /// A request whose affinity key is this member's was picked for it (`kept`) or another
    /// member.
    #[inline]
    pub(crate) fn affinity(&self, kept: bool) {
        #[cfg(feature = "metrics")]
        self.affinity.get_or_init(|| {
            ["kept", "moved"].map(|result| {
                metrics::counter!(
                    "tollgate_pool_affinity_total",
                    "member" => self.name.to_string(),
                    "result" => result
                )
            })
        })[usize::from(!kept)]
        .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = kept;
    }

    /// The member's answer (`outcome`) sent the request on to another member.
    #[inline]
    pub(crate) fn failover(&self, outcome: OutcomeKind) {
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "tollgate_pool_failovers_total",
            "member" => self.name.to_string(),
            "outcome" => outcome.as_str()
        )
        .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }
}

/// No member could take a request (it waited, or failed with `RateLimited`).
#[inline]
pub(crate) fn exhausted() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_pool_exhausted_total").increment(1);
}
