//! [`StackHandle`]: what the stack's layers show of each scope.

use tollgate_cache::CacheHandle;
use tollgate_circuit::{CircuitHandle, CircuitState};
use tollgate_core::Scope;
use tollgate_overload::{OverloadHandle, OverloadState};
use tollgate_pool::PoolHandle;
use tollgate_ratelimit::{LimitState, RateLimitHandle};

/// Watches the stack: breakers, adaptive limits, rate limits, the cache. A layer left out of
/// the stack has no handle.
#[derive(Clone, Debug)]
pub struct StackHandle {
    /// The budgets: spent, reserved, when each resets; and the prices.
    pub budget: Option<crate::Books>,
    /// The breakers.
    pub circuit: Option<CircuitHandle>,
    /// The adaptive limits and overload states.
    pub overload: Option<OverloadHandle>,
    /// The response cache.
    pub cache: Option<CacheHandle>,
    /// The pool's members: health, cooldowns, calls in flight.
    pub pool: Option<PoolHandle>,
    /// The rate limits: configured, reported by the provider's headers, or learned from its
    /// refusals.
    pub rate_limits: Option<RateLimitHandle>,
    /// Whether rate limits are kept per model (else per key: a scope without its model).
    pub(crate) per_model_limits: bool,
}

/// One scope's health.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScopeHealth {
    /// The scope (provider, credential id, model).
    pub scope: Scope,
    /// Its breaker (closed when the stack has none).
    pub circuit: CircuitState,
    /// Its overload state (normal when the stack has no overload layer).
    pub overload: OverloadState,
    /// Its concurrency limit now (0 without an overload layer).
    pub limit: usize,
    /// Its calls in flight (as the overload layer counts them).
    pub in_flight: usize,
    /// Its rate limits, each with where it comes from (configured, the provider's headers, or
    /// learned from its refusals) and what is left now.
    pub rate_limits: Vec<LimitState>,
}

impl StackHandle {
    /// Every scope the stack has seen: by the overload layer, else by the breaker.
    pub fn health(&self) -> Vec<ScopeHealth> {
        let scopes: Vec<(Scope, OverloadState, usize, usize)> =
            match (&self.overload, &self.circuit) {
                (Some(overload), _) => overload
                    .snapshot()
                    .into_iter()
                    .map(|s| (s.scope, s.state, s.limit, s.in_flight))
                    .collect(),
                (None, Some(circuit)) => circuit
                    .snapshot()
                    .into_iter()
                    .map(|(scope, _)| (scope, OverloadState::Normal, 0, 0))
                    .collect(),
                (None, None) => Vec::new(),
            };
        scopes
            .into_iter()
            .map(|(scope, overload, limit, in_flight)| {
                let limited = if self.per_model_limits {
                    scope.clone()
                } else {
                    scope.clone().with_model(None)
                };
                ScopeHealth {
                    circuit: self
                        .circuit
                        .as_ref()
                        .map_or(CircuitState::Closed, |c| c.state(&scope)),
                    rate_limits: self
                        .rate_limits
                        .as_ref()
                        .map_or_else(Vec::new, |r| r.limits(&limited)),
                    scope,
                    overload,
                    limit,
                    in_flight,
                }
            })
            .collect()
    }
}
