//! [`RedisScope`]: one scope's cells and leases, its local counters, and the local limiter it
//! falls back to when Redis is unreachable.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_core::{RateLimitSnapshot, RateLimitWindow, Scope};

use super::Settings;
use super::cell::Cell;
use super::script::Change;
use crate::memory::{MemoryScope, QuotaSource};
use crate::quota::{Dimension, Quota, Quotas};
use crate::store::{Charges, ScopeStats};

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
    /// Where its lease and unsent changes go when it is dropped.
    leftovers: Arc<Leftovers>,
}

/// Most changes waiting in [`Leftovers`]; past it, more are dropped (as while Redis is
/// unreachable) and that is logged.
const MAX_LEFTOVERS: usize = 32_768;

/// The leases and unsent changes of scopes dropped with some: a scope the store did not keep
/// (every kept scope was busy) is dropped when its request ends, and the worker, which only
/// visits kept scopes, would otherwise never send them — a refund would be lost, and a lease
/// would stay taken in Redis until its TAT passed.
pub(crate) struct Leftovers {
    /// The changes, oldest first, and whether some were dropped since it was last empty.
    changes: Mutex<(Vec<Leftover>, bool)>,
    wake: Arc<Notify>,
}

/// A change and the cell it is for.
type Leftover = (Arc<Cell>, Change);

impl Leftovers {
    pub(crate) fn new(wake: Arc<Notify>) -> Self {
        Self {
            changes: Mutex::new((Vec::new(), false)),
            wake,
        }
    }

    fn hand_over(&self, mut changes: Vec<Leftover>) {
        let mut guard = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let (queued, overflowing) = &mut *guard;
        let room = MAX_LEFTOVERS.saturating_sub(queued.len());
        if changes.len() > room {
            changes.truncate(room);
            if !*overflowing {
                tracing::warn!(
                    max = MAX_LEFTOVERS,
                    "too many changes of dropped rate-limit scopes wait for redis; dropping some"
                );
            }
            *overflowing = true;
        }
        queued.extend(changes);
        drop(guard);
        self.wake.notify_one();
    }

    /// The oldest `max` changes waiting.
    pub(crate) fn take(&self, max: usize) -> Vec<Leftover> {
        let mut guard = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let (queued, overflowing) = &mut *guard;
        let end = queued.len().min(max);
        let taken = queued.drain(..end).collect();
        if queued.is_empty() {
            *overflowing = false;
        }
        taken
    }
}

impl fmt::Debug for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queued = self.changes.lock().map_or(0, |guard| guard.0.len());
        f.debug_struct("Leftovers")
            .field("changes", &queued)
            .finish()
    }
}

impl RedisScope {
    pub(crate) fn new(
        name: &Scope,
        quotas: Quotas,
        settings: &Settings,
        epoch: Instant,
        leftovers: Arc<Leftovers>,
    ) -> Self {
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
            leftovers,
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

    /// The part of `charges` on dimensions paced by what this process learned from refusals
    /// (no quota configured, none reported by a header, so none in Redis): those wait on this
    /// process's own pace, in its fallback.
    pub(crate) fn learned_only(&self, charges: Charges) -> Charges {
        let mut learned = Charges::ZERO;
        for dimension in Dimension::ALL {
            if self.cell(dimension).is_none()
                && self.fallback.source(dimension) == Some(QuotaSource::Refusals)
            {
                learned.0[dimension.index()] = charges.get(dimension);
            }
        }
        learned
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
        // A pace shared by a fleet is one request per interval per replica's share.
        min_interval: quotas
            .min_interval
            .map(|i| i.div_f64(share.max(f64::MIN_POSITIVE))),
    }
}

impl Drop for RedisScope {
    /// A scope dropped with a lease or unsent changes (one the store did not keep, or forgot
    /// while a request still held it) hands them to the worker.
    fn drop(&mut self) {
        let pending = std::mem::take(
            self.pending
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut changes: Vec<Leftover> = pending
            .into_iter()
            .filter_map(|(dimension, change)| Some((self.cell(dimension)?.clone(), change)))
            .collect();
        for (_, cell) in self.cells() {
            let units = cell.drain();
            if units > 0 {
                changes.push((cell.clone(), Change::Add(-(units as i64))));
            }
        }
        if !changes.is_empty() {
            self.leftovers.hand_over(changes);
        }
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
