//! The worker of a layer's shared circuits: it sends what its circuits did (opens, probe
//! successes, manual modes), claims and gives back probes, reads the fleet's records and puts
//! its circuits in step, and probes Redis while it is unreachable. Also the guard every Redis
//! command runs under, and the link's health.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use redis::RedisResult;
use tokio::time::Instant;
use tollgate_core::BoxError;

use super::script::{self, Keys, Open, Record};
use super::side::{FleetSide, Hook, instant_at, wall_ms};
use super::{CONNECTION_TIMEOUT, Link, open};
use crate::breaker::{Adopt, Breaker};
use crate::config::{CircuitConfig, Mode};
use crate::layer::Breakers;
use crate::state::CircuitState;

/// Whether Redis answers, and when to try it again if not.
#[derive(Debug, Default)]
pub(crate) struct Health {
    degraded: AtomicBool,
    next_probe: Mutex<Option<Instant>>,
}

impl Health {
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Redis failed: circuits on their own until a probe after `retry` finds it again; said
    /// once per outage. Whether this failure began the outage.
    fn failed(&self, error: &dyn fmt::Display, retry: Duration) -> bool {
        *self
            .next_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + retry);
        let began = !self.degraded.swap(true, Ordering::AcqRel);
        if began {
            tracing::warn!(%error, "redis unreachable: each process's circuit breakers work on their own until it answers");
        }
        began
    }

    fn due(&self) -> bool {
        self.next_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at <= Instant::now())
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("redis answers again: circuit breakers shared by the fleet again");
        }
    }
}

/// Runs one Redis command, failing it after `timeout` of wall-clock time.
///
/// The timeout is a parked blocking-pool thread, not a tokio timer: a round trip takes real
/// time even when tokio's clock is paused (tests), where a timer would fire as soon as every
/// task waits. While that thread waits, a paused clock does not auto-advance either.
pub(crate) async fn guarded<T>(
    timeout: Duration,
    command: impl Future<Output = RedisResult<T>>,
) -> Result<T, BoxError> {
    let (_done, done_rx) = std::sync::mpsc::channel::<()>();
    let mut watchdog = Some(tokio::task::spawn_blocking(move || {
        done_rx.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout)
    }));
    let mut command = pin!(command);
    poll_fn(|cx| {
        if let Poll::Ready(result) = command.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(BoxError::from));
        }
        if let Some(handle) = watchdog.as_mut()
            && let Poll::Ready(fired) = Pin::new(handle).poll(cx)
        {
            watchdog = None;
            if fired.unwrap_or(false) {
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("redis did not answer within {timeout:?}"),
                );
                return Poll::Ready(Err(error.into()));
            }
        }
        Poll::Pending
    })
    .await
}

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
        let health = &worker.hook.link.health;
        if health.is_degraded() {
            if !health.due() || !probe(&worker.hook.link).await {
                continue;
            }
            health.recovered();
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
        let settings = link.settings();
        match guarded(settings.command_timeout, command).await {
            Ok(value) => Ok(value),
            Err(error) => {
                link.health.failed(&*error, settings.retry_interval);
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
        let mut conn = self.hook.link.conn();
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
        let mut conn = self.hook.link.conn();
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
            let mut conn = self.hook.link.conn();
            self.call(script::give_back(&mut conn, &side.key, episode, unused))
                .await?;
        }
        Ok(())
    }

    /// Reads every record not closed and puts the circuits in step.
    async fn read(&self, all: &[Arc<Breaker>]) -> Result<(), Unreachable> {
        let mut conn = self.hook.link.conn();
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

/// Whether Redis answers again, on a fresh connection (the old one may still be waiting on a
/// command sent to a Redis that stopped); if so, the fresh connection replaces it.
async fn probe(link: &Link) -> bool {
    let fresh = async {
        let mut conn = open(&link.client).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(conn)
    };
    match guarded(CONNECTION_TIMEOUT, fresh).await {
        Ok(conn) => {
            *link.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
            true
        }
        Err(error) => {
            link.health.failed(&*error, link.settings().retry_interval);
            false
        }
    }
}
