//! The pool's background task: it sends resets and cooldowns to Redis as they happen, reads
//! the fleet's every sync interval and applies them, and probes Redis while it is unreachable.
//! Also what the pool says when Redis goes away and comes back.

use std::fmt;
use std::sync::{Arc, Weak};

use tokio::time::Instant;
use tollgate_core::redis::guarded;

use super::counters::{self, Tally};
use super::script::{self, Record};
use super::{Fleet, RESET_MEMORY};
use crate::health::MemberState;
use crate::pool::Shared;

/// The task: one per pool, holding it weakly; it ends with the pool.
pub(super) async fn run(pool: Weak<Shared>, fleet: Arc<Fleet>) {
    let mut next_read = Instant::now();
    loop {
        let wait = if fleet.health.is_degraded() {
            fleet.health.until_probe(Instant::now())
        } else {
            next_read.saturating_duration_since(Instant::now())
        };
        if !wait.is_zero() {
            let _ = tokio::time::timeout(wait, fleet.wake.notified()).await;
        }
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if fleet.health.is_degraded() {
            if !fleet.health.is_probe_due(Instant::now()) || !fleet.probe().await {
                continue;
            }
            // Back: everything this process holds goes out again, then the fleet's comes in.
            fleet.publish_all(&pool);
            next_read = Instant::now();
        }
        if !fleet.send_resets().await || !fleet.publish(&pool).await {
            continue;
        }
        if Instant::now() >= next_read {
            fleet.read(&pool).await;
            fleet.count(&pool).await;
            next_read = Instant::now() + fleet.settings.sync_interval;
        }
    }
}

impl Fleet {
    /// Redis failed: this pool's cooldowns and health are its own until a probe finds it
    /// again. The warning is given once per outage.
    fn failed(&self, error: &dyn fmt::Display) {
        // What the others meet until Redis answers again moves no average here.
        self.state().seen.fill(None);
        if self.health.failed(self.settings.retry_interval) {
            tracing::warn!(%error, "redis unreachable: pool cooldowns kept by this process alone until it answers");
        }
    }

    /// Every member out of rotation here is to be published.
    fn publish_all(&self, pool: &Shared) {
        let out: Vec<bool> = pool.health().iter().map(|h| h.out.is_some()).collect();
        let mut state = self.state();
        for (publish, out) in state.publish.iter_mut().zip(out) {
            *publish |= out;
        }
    }

    /// Sends the resets made here; false when Redis failed (they are sent when it answers).
    async fn send_resets(&self) -> bool {
        let resets: Vec<(usize, u64)> = {
            let mut state = self.state();
            state
                .resets
                .iter_mut()
                .enumerate()
                .filter_map(|(member, reset)| reset.take().map(|at| (member, at)))
                .collect()
        };
        if resets.is_empty() {
            return true;
        }
        let keyed: Vec<(&[String; 2], u64)> = resets
            .iter()
            .map(|(member, at)| (&self.keys[*member], *at))
            .collect();
        let memory = u64::try_from(RESET_MEMORY.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.get();
        let call = script::reset(&mut conn, memory, &keyed);
        match guarded(self.settings.command_timeout, call).await {
            Ok(()) => true,
            Err(error) => {
                let mut state = self.state();
                for (member, at) in resets {
                    let kept = &mut state.resets[member];
                    *kept = Some(kept.map_or(at, |k| k.max(at)));
                }
                drop(state);
                self.failed(&*error);
                false
            }
        }
    }

    /// Publishes the cooldowns recorded here since the last time; false when Redis failed
    /// (they are published again when it answers).
    async fn publish(&self, pool: &Shared) -> bool {
        let members: Vec<usize> = {
            let mut state = self.state();
            state
                .publish
                .iter_mut()
                .enumerate()
                .filter_map(|(member, publish)| std::mem::take(publish).then_some(member))
                .collect()
        };
        if members.is_empty() {
            return true;
        }
        let now = Instant::now();
        let mut records: Vec<(usize, Record)> = Vec::with_capacity(members.len());
        {
            let mut health = pool.health();
            for member in members {
                let health = &mut health[member];
                let reason = match health.state(now) {
                    MemberState::Available => continue,
                    MemberState::CoolingDown { reason, .. } | MemberState::Parked { reason } => {
                        reason
                    }
                };
                records.push((
                    member,
                    Record {
                        reason,
                        until: health.back_at().map(|at| self.clock.wall(at)),
                        since: self.clock.wall(health.since.unwrap_or(now)),
                    },
                ));
            }
        }
        if records.is_empty() {
            return true;
        }
        let keyed: Vec<(&[String; 2], Record)> = records
            .iter()
            .map(|(member, record)| (&self.keys[*member], *record))
            .collect();
        let mut conn = self.conn.get();
        let call = script::publish(&mut conn, self.clock.wall(now), &keyed);
        match guarded(self.settings.command_timeout, call).await {
            Ok(held) => {
                // A reset elsewhere, later than its start, cleared it.
                let mut health = pool.health();
                for ((member, record), held) in records.iter().zip(held) {
                    let health = &mut health[*member];
                    if !held && health.since.map(|s| self.clock.wall(s)) == Some(record.since) {
                        health.reset();
                        tracing::info!(member = %pool.members[*member].name, "pool member back in rotation: reset elsewhere in the fleet");
                    }
                }
                true
            }
            Err(error) => {
                self.failed(&*error);
                false
            }
        }
    }

    /// Reads the fleet's cooldowns and resets, and applies them here.
    async fn read(&self, pool: &Shared) {
        let mut conn = self.conn.get();
        let call = script::read(&mut conn, &self.keys);
        match guarded(self.settings.command_timeout, call).await {
            Ok(fleet) => self.apply(pool, &fleet),
            Err(error) => self.failed(&*error),
        }
    }

    /// Applies the fleet's cooldowns (the longer wins) and resets (clearing cooldowns that
    /// began before them).
    fn apply(&self, pool: &Shared, fleet: &[(Option<Record>, u64)]) {
        let now = Instant::now();
        let mut state = self.state();
        let mut health = pool.health();
        for (member, (record, reset)) in fleet.iter().enumerate() {
            let name = &pool.members[member].name;
            let cleared = &mut state.cleared[member];
            *cleared = (*cleared).max(*reset);
            let cleared = *cleared;
            let health = &mut health[member];
            if health.out.is_some()
                && health
                    .since
                    .is_some_and(|since| self.clock.wall(since) <= cleared)
            {
                health.reset();
                tracing::info!(member = %name, "pool member back in rotation: reset elsewhere in the fleet");
            }
            let Some(record) = record.filter(|r| r.since > cleared) else {
                continue;
            };
            health.state(now);
            let until = record.until.map(|at| self.clock.local(at));
            let longer = match (health.out, until) {
                (Some((_, None)), _) => false,
                (None, Some(until)) => until > now,
                (None | Some((_, Some(_))), None) => true,
                (Some((_, Some(current))), Some(until)) => until > current,
            };
            if longer {
                health.out = Some((record.reason, until));
                health.since = Some(self.clock.local(record.since));
                tracing::info!(member = %name, reason = ?record.reason, left = ?until.map(|u| u - now), "pool member out of rotation: seen elsewhere in the fleet");
            }
        }
    }

    /// Adds this process's counts to the fleet's, reads the fleet's back, and moves each
    /// member's averages by what the other processes' calls met.
    async fn count(&self, pool: &Shared) {
        let own: Vec<Tally> = pool.health().iter().map(Tally::of).collect();
        let increments: Vec<Tally> = {
            let state = self.state();
            own.iter()
                .zip(&state.sent)
                .map(|(own, sent)| own.since(*sent).unwrap_or(*own))
                .collect()
        };
        let mut conn = self.conn.get();
        let call = counters::exchange(&mut conn, &self.counter_keys, &increments);
        let totals = match guarded(self.settings.command_timeout, call).await {
            Ok(totals) => totals,
            Err(error) => {
                // The increments go again.
                self.failed(&*error);
                return;
            }
        };
        let mut state = self.state();
        state.sent = own;
        let mut health = pool.health();
        for (member, total) in totals.into_iter().enumerate() {
            let seen = state.seen[member].replace(total);
            let elsewhere = seen
                .and_then(|seen| total.since(seen))
                .and_then(|grown| grown.since(increments[member]));
            let health = &mut health[member];
            health.fleet = Some(total.counters());
            if let Some(elsewhere) = elsewhere {
                health.take_in(&elsewhere.elsewhere());
            }
        }
    }

    /// Whether Redis answers again, on a fresh connection (the old one may still be waiting
    /// on a command sent to a Redis that stopped); if so, the fresh connection replaces it.
    async fn probe(&self) -> bool {
        match self.conn.reconnect().await {
            Ok(()) => {
                if self.health.recovered() {
                    tracing::info!("redis answers again: pool cooldowns shared with the fleet");
                }
                true
            }
            Err(error) => {
                self.failed(&*error);
                false
            }
        }
    }
}
