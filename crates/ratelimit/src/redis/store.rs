//! [`Store`] for [`RedisStore`]: where each change goes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::{RateLimitSnapshot, Scope};

use super::script::Change;
use super::{RedisReserve, RedisScope, RedisStore};
use crate::gcra::View;
use crate::learn::RefusalHint;
use crate::quota::Dimension;
use crate::store::{Charges, ScopeStats, Store};

impl Store for RedisStore {
    type Scope = RedisScope;
    type Reserve = RedisReserve;

    const SHARED: bool = true;

    fn scope(&self, scope: &Scope, now: Instant) -> Arc<RedisScope> {
        let _ = now;
        self.shared.scopes.load().get(scope)
    }

    fn stats(scope: &RedisScope) -> &ScopeStats {
        scope.stats()
    }

    fn reserve(
        &self,
        scope: &Arc<RedisScope>,
        charges: Charges,
        now: Instant,
        max_wait: Duration,
    ) -> RedisReserve {
        self.shared.reserve(scope, charges, now, max_wait)
    }

    fn release(&self, scope: &RedisScope, charges: Charges) {
        let shared = &self.shared;
        if shared.health.is_degraded() {
            return scope.fallback().release(charges);
        }
        scope.fallback().release(scope.learned_only(charges));
        // To Redis, not into the lease: a refund is the provider's at the moment it is made,
        // and a lease may only hold units granted within its hold.
        for (dimension, _) in scope.cells() {
            shared.add(scope, dimension, charges.get(dimension), -1);
        }
    }

    fn charge(&self, scope: &RedisScope, charges: Charges) {
        let shared = &self.shared;
        if shared.health.is_degraded() {
            return scope.fallback().charge(charges);
        }
        scope.fallback().charge(scope.learned_only(charges));
        let now = shared.clock.local(Instant::now());
        for (dimension, cell) in scope.cells() {
            let units = charges.get(dimension);
            if units > 0 && cell.take(units, now).is_none() {
                shared.add(scope, dimension, units, 1);
            }
        }
    }

    fn observe(&self, scope: &RedisScope, snapshot: &RateLimitSnapshot, learn: bool, now: Instant) {
        let shared = &self.shared;
        // The fallback follows the provider too, so it starts informed.
        scope.fallback().observe(snapshot, learn, now);
        let at = snapshot.sent_at.unwrap_or(now);
        let windows = [
            (Dimension::Requests, snapshot.requests),
            (Dimension::Tokens, snapshot.tokens),
            (Dimension::InputTokens, snapshot.input_tokens),
            (Dimension::OutputTokens, snapshot.output_tokens),
        ];
        for (dimension, window) in windows {
            let Some(window) = window else { continue };
            if learn {
                scope.learn(dimension, &window);
            }
            let (Some(cell), Some(remaining)) = (scope.cell(dimension), window.remaining) else {
                continue;
            };
            // A window of another period (Groq's requests per day) says nothing about this one.
            if shared.health.is_degraded()
                || window.period.is_some_and(|p| p != cell.quota.period())
            {
                continue;
            }
            // The provider counts this process's unspent lease as unused; Redis as taken.
            let leased = cell.spendable(shared.clock.local(now));
            let remaining = remaining.saturating_sub(leased);
            shared.change(scope, dimension, Change::Tighten { remaining, at });
        }
    }

    fn pause(
        &self,
        scope: &RedisScope,
        dimensions: &[Dimension],
        until: Instant,
        charges: Charges,
    ) {
        let shared = &self.shared;
        scope.fallback().pause(dimensions, until, charges);
        if shared.health.is_degraded() {
            return;
        }
        for dimension in dimensions {
            if let Some(cell) = scope.cell(*dimension) {
                // Nobody here spends the lease during the pause: it goes back first.
                shared.add(scope, *dimension, cell.drain(), -1);
                let units = charges.get(*dimension);
                shared.change(scope, *dimension, Change::Pause { until, units });
            }
        }
    }

    fn view(&self, scope: &RedisScope, dimension: Dimension, now: Instant) -> Option<View> {
        if self.shared.health.is_degraded() {
            return scope.fallback().view(dimension, now);
        }
        match scope.cell(dimension) {
            Some(cell) => Some(cell.view(self.shared.clock.local(now))),
            // A pace this process learned from refusals.
            None => scope.fallback().view(dimension, now),
        }
    }

    /// Counted for the pace learned from refusals, which each process keeps in its fallback
    /// (see [Learned from refusals](super::RedisStore#learned-from-refusals)).
    fn answered(&self, scope: &RedisScope, charges: Charges, now: Instant) {
        scope.fallback().answered(charges, now);
    }

    fn refused(
        &self,
        scope: &RedisScope,
        dimensions: &[Dimension],
        window: Option<Duration>,
        retry_after: Option<Duration>,
        sent_at: Instant,
        now: Instant,
    ) {
        let fallback = scope.fallback();
        let hint = RefusalHint {
            window,
            retry_after,
            sent_at: fallback.nanos_at(sent_at),
        };
        fallback.refused(dimensions, hint, now);
    }
}
