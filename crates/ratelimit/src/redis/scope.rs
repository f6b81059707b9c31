//! [`RedisScope`]: one scope's cells and leases, its local counters, and the local limiter it
//! falls back to when Redis is unreachable.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::{RateLimitSnapshot, RateLimitWindow, Scope};

use super::Settings;
use super::cell::Cell;
use super::script::Change;
use crate::memory::MemoryScope;
use crate::quota::{Dimension, Quota, Quotas};
use crate::store::ScopeStats;

/// The state of one scope in a [`RedisStore`](super::RedisStore), in this process: a cell per
/// limited dimension (its Redis key and this process's lease on it), the estimate counters and
/// the line of waiting requests, and the local limiter used while Redis is unreachable.
pub struct RedisScope {
    name: Scope,
    prefix: Arc<str>,
    fraction: f64,
    hold: Duration,
    cells: [OnceLock<Arc<Cell>>; 5],
    stats: ScopeStats,
    fallback: MemoryScope,
    /// Releases, charges, provider counts and pauses not yet sent, in order.
    pending: Mutex<Vec<(Dimension, Change)>>,
    /// One call to Redis at a time for this scope, in arrival order: a reservation carries the
    /// changes queued before it, and the worker sends the rest.
    pub(crate) turn: tokio::sync::Mutex<()>,
}

impl RedisScope {
    pub(crate) fn new(name: &Scope, quotas: Quotas, settings: &Settings, epoch: Instant) -> Self {
        let scope = Self {
            name: name.clone(),
            prefix: settings.prefix.clone(),
            fraction: settings.lease_fraction,
            hold: settings.lease_hold,
            cells: Default::default(),
            stats: ScopeStats::default(),
            fallback: MemoryScope::new(share(quotas, settings.local_share), epoch),
            pending: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
        };
        for dimension in Dimension::ALL {
            if let Some(quota) = quotas.get(dimension) {
                scope.set(dimension, quota);
            }
        }
        scope
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.name
    }

    /// The Redis key of `dimension`: `prefix:{scope}:dimension`. The braces make it a hash
    /// tag, so a scope's keys share a slot on Redis Cluster; the scope's text names the key
    /// by its id, never its secret.
    pub fn key(&self, dimension: Dimension) -> String {
        format!("{}:{{{}}}:{dimension}", self.prefix, self.name)
    }

    fn set(&self, dimension: Dimension, quota: Quota) {
        let key = self.key(dimension).into();
        let _ = self.cells[dimension.index()].set(Arc::new(Cell::new(
            quota,
            key,
            self.fraction,
            self.hold,
        )));
    }

    pub(crate) fn cell(&self, dimension: Dimension) -> Option<&Arc<Cell>> {
        self.cells[dimension.index()].get()
    }

    pub(crate) fn cells(&self) -> impl Iterator<Item = (Dimension, &Arc<Cell>)> {
        Dimension::ALL
            .into_iter()
            .filter_map(|d| self.cell(d).map(|cell| (d, cell)))
    }

    pub(crate) fn stats(&self) -> &ScopeStats {
        &self.stats
    }

    pub(crate) fn fallback(&self) -> &MemoryScope {
        &self.fallback
    }

    /// Whether forgetting the scope loses nothing: it holds no lease and has sent everything.
    pub(crate) fn is_idle(&self) -> bool {
        self.cells().all(|(_, cell)| cell.unspent() == 0) && !self.has_pending()
    }

    /// Queues `change` of `dimension` for Redis.
    pub(crate) fn push(&self, dimension: Dimension, change: Change) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((dimension, change));
    }

    /// Replays the changes queued for `dimension` on `tat` (local nanoseconds), as the script
    /// will, with `local` turning instants into local nanoseconds.
    pub(crate) fn replay(
        &self,
        dimension: Dimension,
        cell: &Cell,
        mut tat: i128,
        local: impl Fn(Instant) -> u64,
    ) -> i128 {
        let (interval, tolerance) = (i128::from(cell.interval), i128::from(cell.tolerance));
        let after = |at: Instant, units: u64| {
            i128::from(local(at)) + (tolerance - i128::from(units) * interval).max(0)
        };
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, change) in pending.iter().filter(|(d, _)| *d == dimension) {
            tat = match *change {
                Change::Add(units) => tat + i128::from(units) * interval,
                Change::Tighten { remaining, at } => tat.max(after(at, remaining)),
                Change::Pause { until, units } => tat.max(after(until, units.max(1))),
            };
        }
        tat
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The queued changes (at most `max`), in order, with their cells.
    pub(crate) fn take_pending(&self, max: usize) -> Vec<(&Cell, Change)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let end = pending.len().min(max);
        let taken: Vec<_> = pending.drain(..end).collect();
        drop(pending);
        taken
            .into_iter()
            .filter_map(|(dimension, change)| self.cell(dimension).map(|cell| (&**cell, change)))
            .collect()
    }

    /// Learns a quota nobody configured from the provider's header, once.
    pub(crate) fn learn(&self, dimension: Dimension, window: &RateLimitWindow) {
        if self.cell(dimension).is_some() || dimension == Dimension::RequestsPerDay {
            return;
        }
        if let Some(limit) = window.limit.and_then(NonZeroU64::new) {
            let period = window.period.unwrap_or(Duration::from_secs(60));
            self.set(dimension, Quota::new(limit, period));
        }
    }
}

impl RedisScope {
    /// Brings the local fallback down to this process's share of what Redis last reported,
    /// plus its lease.
    pub(crate) fn seed_fallback(&self, now: Instant, local_now: u64, share: f64) {
        let mut snapshot = RateLimitSnapshot {
            sent_at: Some(now),
            ..RateLimitSnapshot::default()
        };
        for (dimension, cell) in self.cells() {
            let leased = cell.spendable(local_now);
            let free = cell.view(local_now).remaining.saturating_sub(leased);
            let window = Some(RateLimitWindow {
                remaining: Some((free as f64 * share).floor() as u64 + leased),
                period: Some(cell.quota.period()),
                ..RateLimitWindow::default()
            });
            match dimension {
                Dimension::Requests => snapshot.requests = window,
                Dimension::Tokens => snapshot.tokens = window,
                Dimension::InputTokens => snapshot.input_tokens = window,
                Dimension::OutputTokens => snapshot.output_tokens = window,
                Dimension::RequestsPerDay => {}
            }
        }
        self.fallback.observe(&snapshot, false, now);
    }
}

/// `quotas` scaled down to `share` (at least one unit each).
fn share(quotas: Quotas, share: f64) -> Quotas {
    let scale = |limit: Option<NonZeroU64>| {
        limit.map(|n| {
            NonZeroU64::new((n.get() as f64 * share).floor() as u64).unwrap_or(NonZeroU64::MIN)
        })
    };
    Quotas {
        requests_per_minute: scale(quotas.requests_per_minute),
        tokens_per_minute: scale(quotas.tokens_per_minute),
        input_tokens_per_minute: scale(quotas.input_tokens_per_minute),
        output_tokens_per_minute: scale(quotas.output_tokens_per_minute),
        requests_per_day: scale(quotas.requests_per_day),
    }
}

impl fmt::Debug for RedisScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RedisScope");
        debug.field("scope", &self.name);
        for (dimension, cell) in self.cells() {
            debug.field(dimension.as_str(), &(cell.quota, cell.unspent()));
        }
        debug.finish_non_exhaustive()
    }
}
