//! The store's background task: it sends the releases, charges, provider counts and pauses no
//! reservation carried, gives back leases that outlived their hold, and probes Redis while it
//! is unreachable. Also what the store says when Redis goes away and comes back.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_core::redis::guarded;

use super::Shared;
use super::cell::Cell;
use super::clock::Frame;
use super::scope::RedisScope;
use super::script::{self, Change};

/// Most changes one script call carries.
pub(crate) const MAX_CHANGES: usize = 512;

/// How long the worker lets changes gather, so that a reservation can carry them instead.
const LINGER: Duration = Duration::from_millis(5);

/// The worker: one per store, holding it weakly; it ends with the store.
pub(crate) async fn run(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let Some(tick) = shared.upgrade().map(|s| s.settings().tick()) else {
            return;
        };
        if tokio::time::timeout(tick, wake.notified()).await.is_ok() {
            tokio::time::sleep(LINGER).await;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let at = Instant::now();
        let now = shared.clock.local(at);
        shared.reap(now);
        for scope in shared.scopes_to_send(false) {
            shared.send(&scope).await;
        }
        shared.send_leftovers().await;
        if shared.health.is_probe_due(at) {
            shared.probe().await;
        }
    }
}

impl Shared {
    /// A command failed: the first failure of an outage says so and, fail-open, starts the
    /// local limits.
    pub(super) fn failed(&self, error: &dyn fmt::Display) {
        let settings = self.settings();
        if !self.health.failed(settings.retry_interval) {
            return;
        }
        if settings.fail_open {
            tracing::warn!(%error, "redis unreachable: rate limiting with this process's local share of each quota until it answers");
            // The local limits start from what Redis last said, not from full buckets.
            let now = Instant::now();
            self.scopes.load().for_each(|_, scope| {
                scope.seed_fallback(now, self.clock.local(now), settings.local_share);
            });
        } else {
            tracing::warn!(%error, "redis unreachable: refusing rate-limited requests until it answers (fail-closed)");
        }
    }

    /// Leases past their hold go back to Redis.
    fn reap(&self, now: u64) {
        self.scopes.load().for_each(|_, scope| {
            for (dimension, cell) in scope.cells() {
                let units = cell.drain_expired(now);
                if units > 0 {
                    scope.push(dimension, Change::Add(-(units as i64)));
                }
            }
        });
    }

    /// The scopes with changes to send (`all`: every scope).
    pub(super) fn scopes_to_send(&self, all: bool) -> Vec<Arc<RedisScope>> {
        let mut out = Vec::new();
        self.scopes.load().for_each(|_, scope| {
            if all || scope.has_pending() {
                out.push(scope.clone());
            }
        });
        out
    }

    /// Sends the changes of scopes that were let go of with some unsent (their leftovers).
    pub(super) async fn send_leftovers(&self) {
        loop {
            let taken = self.leftovers.take(MAX_CHANGES);
            if taken.is_empty() {
                return;
            }
            let changes: Vec<(&Cell, Change)> = taken
                .iter()
                .map(|(cell, change)| (&**cell, *change))
                .collect();
            if !self.send_changes(&changes).await {
                return;
            }
        }
    }

    /// Sends the changes queued for `scope`, in its turn.
    pub(super) async fn send(&self, scope: &RedisScope) {
        let _turn = scope.turn.lock().await;
        loop {
            let changes = scope.take_pending(MAX_CHANGES);
            if changes.is_empty() || !self.send_changes(&changes).await {
                return;
            }
        }
    }

    /// Sends `changes` alone; false when Redis did not take them (they are dropped: while Redis
    /// is unreachable, changes stay local).
    pub(super) async fn send_changes(&self, changes: &[(&Cell, Change)]) -> bool {
        if self.health.is_degraded() {
            return false;
        }
        let frame = self.clock.frame(Instant::now());
        let mut conn = self.conn.get();
        self.update_trips.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings().command_timeout;
        let call = script::apply(&mut conn, &frame, changes, &[], Duration::ZERO);
        match guarded(timeout, call).await {
            Ok(applied) => {
                self.seen(&frame, changes, &applied.changed);
                true
            }
            Err(error) => {
                self.failed(&*error);
                false
            }
        }
    }

    /// Records the TATs Redis reported for `changes`.
    pub(super) fn seen(&self, frame: &Frame, changes: &[(&Cell, Change)], tats: &[i64]) {
        for ((cell, _), tat) in changes.iter().zip(tats) {
            cell.seen(self.clock.local(frame.instant(*tat)));
        }
    }

    /// Asks Redis whether it answers again, on a fresh connection (the old one may still be
    /// waiting on a reconnection attempt of its own).
    async fn probe(&self) {
        match self.conn.reconnect().await {
            Ok(()) => {
                // Redis may have lost its keys: forget what it said before.
                self.scopes.load().for_each(|_, scope| {
                    for (_, cell) in scope.cells() {
                        cell.seen(0);
                    }
                });
                if self.health.recovered() {
                    tracing::info!("redis answers again: back to the fleet's shared limits");
                }
            }
            Err(error) => self.failed(&*error),
        }
    }
}
