//! The worker of a layer's shared circuits: it sends what its circuits did (opens, probe
//! successes, manual modes), claims and gives back probes, reads the fleet's records and puts
//! its circuits in step, and probes Redis while it is unreachable. Also what the circuits say
//! when Redis goes away and comes back.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use redis::RedisResult;
use tokio::time::Instant;
use tollgate_core::redis::guarded;

use super::Link;
use super::script::{self, Keys, Open, Record};
use super::side::{FleetSide, Hook, instant_at, wall_ms};
use crate::breaker::{Adopt, Breaker};
use crate::config::{CircuitConfig, Mode};
use crate::layer::Breakers;
use crate::state::CircuitState;

/// The worker of one layer's circuits, holding them weakly: it ends with them.
pub(crate) async fn run(breakers: Weak<Breakers>, hook: Arc<Hook>, config: Arc<CircuitConfig>) {
    let worker = Worker { hook, config };
    let mut last_read: Option<Instant> = None;
    loop {
        let interval = worker.hook.link.settings().sync_interval;
        let _ = tokio::time::timeout(interval, worker.hook.wake.notified()).await;
        let Some(breakers) = breakers.upgrade() else {
            return;
        };
        let link = &worker.hook.link;
        let health = &link.health;
        if health.is_degraded() {
            // A fresh connection, which replaces the old one once Redis answers.
            if !health.is_probe_due(Instant::now())
                || (link.conn.reconnect().await)
                    .map_err(|e| link.failed(&*e))
                    .is_err()
            {
                continue;
            }
            if health.recovered() {
                tracing::info!("redis answers again: circuit breakers shared by the fleet again");
            }
            last_read = None;
        }
        let mut all = Vec::new();
        breakers.for_each(|_, breaker| {
            if breaker.fleet().is_some() {
                all.push(breaker.clone());
            }
        });
        drop(breakers);
        if worker.send(&all).await.is_err() {
            worker.went_away(&all);
            continue;
        }
        if last_read.is_none_or(|at| at.elapsed() >= interval) {
            last_read = Some(Instant::now());
            if worker.read(&all).await.is_err() {
                worker.went_away(&all);
            }
        }
    }
}

struct Worker {
    hook: Arc<Hook>,
    config: Arc<CircuitConfig>,
}

/// Redis did not answer (the outage has been noted).
struct Unreachable;

impl Worker {
    fn keys<'a>(&'a self, side: &'a FleetSide) -> Keys<'a> {
        Keys {
            record: &side.key,
            index: &self.hook.index,
        }
    }

    fn probes(&self) -> u32 {
        self.config.half_open_probes
    }

    fn linger(&self) -> i64 {
        i64::try_from(self.config.max_open_duration.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Runs `command` under the timeout, noting an outage.
    async fn call<T>(
        &self,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        let link = &self.hook.link;
        match guarded(link.settings().command_timeout, command).await {
            Ok(value) => Ok(value),
            Err(error) => {
                link.failed(&*error);
                Err(Unreachable)
            }
        }
    }

    /// Redis went away: half-open circuits count their probes alone.
    fn went_away(&self, all: &[Arc<Breaker>]) {
        for breaker in all {
            let local = breaker.local();
            if local.state == CircuitState::HalfOpen {
                breaker.probe_locally(local.generation);
            }
        }
    }

    /// Sends what each circuit has to send, claims and gives back probes.
    async fn send(&self, all: &[Arc<Breaker>]) -> Result<(), Unreachable> {
        let hold = self.hook.link.settings().probe_hold;
        for breaker in all {
            let side = breaker.fleet().expect("fleet circuits only");
            if side.take_dirty() {
                let sent = match self.publish(breaker, side).await {
                    Ok(()) => self.claim(breaker, side).await,
                    Err(unreachable) => Err(unreachable),
                };
                if let Err(unreachable) = sent {
                    // Sent again once Redis answers.
                    side.mark_dirty();
                    return Err(unreachable);
                }
            }
            self.give_back(breaker, side, hold).await?;
        }
        Ok(())
    }

    async fn publish(&self, breaker: &Breaker, side: &FleetSide) -> Result<(), Unreachable> {
        let mut conn = self.hook.link.conn.get();
        let mode = side.sync().mode.take();
        if let Some(mode) = mode {
            let text = mode.map_or("", mode_name);
            if let Err(unreachable) = self
                .call(script::set_mode(&mut conn, self.keys(side), text))
                .await
            {
                let mut sync = side.sync();
                sync.mode.get_or_insert(mode);
                return Err(unreachable);
            }
            side.sync().fleet_mode = mode.is_some();
        }
        let unpublished = side.sync().unpublished;
        if let Some(wanted) = unpublished {
            let now = wall_ms(Instant::now());
            if breaker.local().state != CircuitState::Open || wanted.until <= now {
                // Over already: the open period stays this process's own.
                let mut sync = side.sync();
                if sync.unpublished == Some(wanted) {
                    sync.unpublished = None;
                }
            } else {
                let open = Open {
                    now,
                    until: wanted.until,
                    trips: wanted.trips,
                    linger: self.linger(),
                    from: wanted.from,
                };
                let record = self
                    .call(script::open(&mut conn, self.keys(side), open))
                    .await?;
                let mut sync = side.sync();
                if sync.unpublished == Some(wanted) {
                    sync.unpublished = None;
                    if record.mode.is_empty()
                        && record.until == wanted.until
                        && i64::from(wanted.trips) == record.trips
                    {
                        sync.episode = record.episode;
                    } else {
                        drop(sync);
                        apply(breaker, side, Some(&record), now);
                    }
                }
            }
        }
        let (episode, successes) = {
            let mut sync = side.sync();
            (sync.episode, std::mem::take(&mut sync.successes))
        };
        if successes > 0 && episode != 0 {
            let call = script::succeeded(
                &mut conn,
                self.keys(side),
                episode,
                successes,
                self.probes(),
            );
            if self.call(call).await? {
                let sync = side.sync();
                if sync.episode == episode && breaker.local().state != CircuitState::Closed {
                    drop(sync);
                    breaker.adopt(Adopt::Closed);
                }
            }
        }
        Ok(())
    }

    /// Claims probes for the calls a half-open circuit refused.
    async fn claim(&self, breaker: &Breaker, side: &FleetSide) -> Result<(), Unreachable> {
        let local = breaker.local();
        let episode = {
            let sync = side.sync();
            if local.state != CircuitState::HalfOpen || !sync.is_episode(local.generation) {
                return Ok(());
            }
            sync.episode
        };
        let want = side
            .wants
            .swap(0, Ordering::Relaxed)
            .min(u32::from(local.issued));
        if want == 0 {
            return Ok(());
        }
        let mut conn = self.hook.link.conn.get();
        let now = wall_ms(Instant::now());
        let call = script::claim(&mut conn, &side.key, now, episode, want, self.probes());
        let granted = self.call(call).await?;
        if granted == 0 {
            return Ok(());
        }
        if breaker.grant(local.generation, granted) {
            side.sync().claimed_at = Some(Instant::now());
        } else {
            self.call(script::give_back(&mut conn, &side.key, episode, granted))
                .await?;
        }
        Ok(())
    }

    /// Gives back probes granted more than `hold` ago that no call took.
    async fn give_back(
        &self,
        breaker: &Breaker,
        side: &FleetSide,
        hold: Duration,
    ) -> Result<(), Unreachable> {
        let local = breaker.local();
        if local.state != CircuitState::HalfOpen {
            return Ok(());
        }
        let episode = {
            let sync = side.sync();
            let stale = sync.claimed_at.is_some_and(|at| at.elapsed() >= hold);
            if !stale || !sync.is_episode(local.generation) {
                return Ok(());
            }
            sync.episode
        };
        let unused = breaker.take_unused(local.generation);
        side.sync().claimed_at = None;
        if unused > 0 {
            let mut conn = self.hook.link.conn.get();
            self.call(script::give_back(&mut conn, &side.key, episode, unused))
                .await?;
        }
        Ok(())
    }

    /// Reads every record not closed and puts the circuits in step.
    async fn read(&self, all: &[Arc<Breaker>]) -> Result<(), Unreachable> {
        let mut conn = self.hook.link.conn.get();
        let now = wall_ms(Instant::now());
        let records = self
            .call(script::snapshot(&mut conn, &self.hook.index, now))
            .await?;
        let records: HashMap<String, Record> = records.into_iter().collect();
        for breaker in all {
            let side = breaker.fleet().expect("fleet circuits only");
            apply(breaker, side, records.get(&side.key), now);
        }
        *self
            .hook
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = records;
        Ok(())
    }
}

/// Puts `breaker` where the fleet's `record` says (`None`: closed), unless it has something of
/// its own to send first.
pub(crate) fn apply(breaker: &Breaker, side: &FleetSide, record: Option<&Record>, now: i64) {
    let mut sync = side.sync();
    if sync.mode.is_some() || sync.unpublished.is_some() {
        return;
    }
    let mode = record.and_then(|r| mode_from_name(&r.mode));
    match mode {
        Some(mode) => {
            sync.fleet_mode = true;
            sync.episode = 0;
            drop(sync);
            if breaker.mode() != mode {
                breaker.set_mode(mode);
            }
            return;
        }
        None if sync.fleet_mode => {
            sync.fleet_mode = false;
            if breaker.mode() != Mode::Normal {
                breaker.set_mode(Mode::Normal);
            }
        }
        None => {}
    }
    let local = breaker.local();
    match record {
        Some(record) => {
            let trips = u32::try_from(record.trips).unwrap_or(u32::MAX);
            if sync.episode == record.episode {
                return;
            }
            let to = if record.until <= now {
                Adopt::HalfOpen { trips }
            } else {
                Adopt::Open {
                    until: instant_at(record.until),
                    trips,
                }
            };
            let generation = breaker.adopt(to);
            sync.episode = record.episode;
            sync.generation = match to {
                Adopt::HalfOpen { .. } => generation.wrapping_sub(1),
                _ => generation,
            };
            sync.successes = 0;
            sync.claimed_at = None;
        }
        None => {
            if sync.episode != 0
                && local.state != CircuitState::Closed
                && sync.is_episode(local.generation)
            {
                drop(sync);
                breaker.adopt(Adopt::Closed);
                sync = side.sync();
            }
            sync.episode = 0;
        }
    }
}

/// Seeds a circuit made after the last read from the fleet's record of its scope.
pub(crate) fn seed(breaker: &Breaker) {
    if let Some(side) = breaker.fleet()
        && let Some(record) = side.hook.record(&side.key)
    {
        apply(breaker, side, Some(&record), wall_ms(Instant::now()));
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::ForcedOpen => "forced_open",
        Mode::Disabled => "disabled",
        Mode::MetricsOnly => "metrics_only",
        Mode::Normal => "",
    }
}

fn mode_from_name(name: &str) -> Option<Mode> {
    match name {
        "forced_open" => Some(Mode::ForcedOpen),
        "disabled" => Some(Mode::Disabled),
        "metrics_only" => Some(Mode::MetricsOnly),
        _ => None,
    }
}

impl Link {
    /// A command failed: circuits on their own until a probe finds Redis again; said once per
    /// outage.
    fn failed(&self, error: &dyn fmt::Display) {
        if self.health.failed(self.settings().retry_interval) {
            tracing::warn!(%error, "redis unreachable: each process's circuit breakers work on their own until it answers");
        }
    }
}
