//! One circuit: a state word on an atomic, a window of calls, and the transitions.
//!
//! The state, the open period's generation and the half-open probe counts share one `u64`, so
//! that admitting a probe, counting its success and closing are each one compare-exchange, and
//! no more than the configured number of probes is ever let through. An outcome is counted only
//! against the generation that admitted its call: a call let through before a trip cannot close
//! the circuit after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tollgate_core::Scope;
use tollgate_core::error::CircuitOpen;

use crate::config::{CircuitConfig, Mode};
use crate::metrics::BreakerMetrics;
use crate::state::{CircuitEvent, CircuitMetrics, CircuitState, Reason};
use crate::window::Calls;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The unpacked state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Word {
    generation: u32,
    state: u8,
    issued: u8,
    succeeded: u8,
}

impl Word {
    fn unpack(word: u64) -> Self {
        Self {
            generation: (word >> 32) as u32,
            state: word as u8,
            issued: (word >> 8) as u8,
            succeeded: (word >> 16) as u8,
        }
    }

    fn pack(self) -> u64 {
        (u64::from(self.generation) << 32)
            | (u64::from(self.succeeded) << 16)
            | (u64::from(self.issued) << 8)
            | u64::from(self.state)
    }

    fn next(self, state: u8) -> Self {
        Self {
            generation: self.generation.wrapping_add(1),
            state,
            issued: 0,
            succeeded: 0,
        }
    }
}

/// What a finished call says about the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
    pub(crate) retry_after: Option<Duration>,
}

/// A call let through; dropped without a verdict (the caller gave up), it gives its probe slot
/// back.
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: Arc<Breaker>,
    generation: u32,
    probe: bool,
    tracked: bool,
    done: bool,
    /// When the call started, if anything needs to know (slow calls, a time window).
    started: Option<Instant>,
}

impl Permit {
    /// Counts the call's verdict.
    pub(crate) fn record(mut self, verdict: Verdict) {
        self.done = true;
        if self.tracked {
            self.breaker.record(self.generation, self.probe, verdict);
        }
    }

    /// Whether the call was slow (always `false` when no slow-call rate is configured).
    pub(crate) fn is_slow(&self) -> bool {
        self.started
            .is_some_and(|started| started.elapsed() > self.breaker.config.slow_call_threshold)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.return_probe(self.generation);
        }
    }
}

/// One circuit.
#[derive(Debug)]
pub(crate) struct Breaker {
    scope: Scope,
    config: Arc<CircuitConfig>,
    epoch: Instant,
    word: AtomicU64,
    mode: AtomicU8,
    open_until: AtomicU64,
    trips: AtomicU32,
    consecutive: AtomicU32,
    calls: Calls,
    /// Whether calls must be timed: a slow-call rate or a time window.
    needs_clock: bool,
    events: broadcast::Sender<CircuitEvent>,
    metrics: BreakerMetrics,
    /// The circuit's side of a fleet sharing it through Redis.
    #[cfg(feature = "redis")]
    fleet: Option<crate::fleet::FleetSide>,
}

fn mode_to_u8(mode: Mode) -> u8 {
    match mode {
        Mode::Normal => 0,
        Mode::MetricsOnly => 1,
        Mode::Disabled => 2,
        Mode::ForcedOpen => 3,
    }
}

fn mode_from_u8(mode: u8) -> Mode {
    match mode {
        1 => Mode::MetricsOnly,
        2 => Mode::Disabled,
        3 => Mode::ForcedOpen,
        _ => Mode::Normal,
    }
}

impl Breaker {
    pub(crate) fn new(
        scope: Scope,
        config: Arc<CircuitConfig>,
        mode: Mode,
        epoch: Instant,
        events: broadcast::Sender<CircuitEvent>,
    ) -> Self {
        let calls = Calls::new(config.window);
        let needs_clock = config.slow_call_rate.is_some() || matches!(calls, Calls::Time(_));
        let initial = match mode {
            Mode::Normal => CircuitState::Closed,
            Mode::MetricsOnly => CircuitState::MetricsOnly,
            Mode::Disabled => CircuitState::Disabled,
            Mode::ForcedOpen => CircuitState::ForcedOpen,
        };
        Self {
            metrics: BreakerMetrics::new(&scope, initial),
            scope,
            config,
            epoch,
            word: AtomicU64::new(0),
            mode: AtomicU8::new(mode_to_u8(mode)),
            open_until: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            consecutive: AtomicU32::new(0),
            calls,
            needs_clock,
            events,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }

    pub(crate) fn mode(&self) -> Mode {
        mode_from_u8(self.mode.load(Ordering::Acquire))
    }

    /// Lets a call through, or refuses it while open. The clock is read only when something
    /// needs it: an open circuit, slow-call counting, a time window.
    pub(crate) fn admit(self: Arc<Self>) -> Result<Permit, CircuitOpen> {
        let mode = self.mode();
        let started = self.needs_clock.then(Instant::now);
        let permit = |breaker: Arc<Self>, generation, probe, tracked| Permit {
            breaker,
            generation,
            probe,
            tracked,
            done: false,
            started,
        };
        match mode {
            Mode::Disabled => return Ok(permit(self, 0, false, false)),
            Mode::ForcedOpen => {
                self.metrics.rejected();
                return Err(CircuitOpen::forced());
            }
            Mode::Normal | Mode::MetricsOnly => {}
        }
        let lenient = mode == Mode::MetricsOnly;
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::unpack(current);
            match word.state {
                CLOSED => return Ok(permit(self, word.generation, false, true)),
                OPEN => {
                    let until = self.open_until.load(Ordering::Acquire);
                    let at = self.nanos(started.unwrap_or_else(Instant::now));
                    if at < until {
                        if lenient {
                            return Ok(permit(self, word.generation, false, false));
                        }
                        let retry_after = Some(Duration::from_nanos(until - at));
                        self.metrics.rejected();
                        return Err(CircuitOpen::new(retry_after));
                    }
                    let next = self.half_open_from(word);
                    match self.swap(current, next) {
                        Ok(()) => {
                            self.emit(
                                CircuitState::Open,
                                CircuitState::HalfOpen,
                                Reason::OpenPeriodOver,
                                None,
                            );
                            current = next.pack();
                        }
                        Err(actual) => current = actual,
                    }
                }
                _ => {
                    if u32::from(word.issued) >= self.config.half_open_probes {
                        if lenient {
                            return Ok(permit(self, word.generation, false, false));
                        }
                        // In a fleet, this circuit may be granted a probe at its worker's
                        // next round trip: say so, or a pool above would take the member out
                        // for its whole breaker cooldown and never send the probe.
                        #[cfg(feature = "redis")]
                        if let Some(fleet) = &self.fleet {
                            fleet.wants_probe();
                            self.metrics.rejected();
                            let soon = fleet.hook.link.settings().sync_interval;
                            return Err(CircuitOpen::new(Some(soon)));
                        }
                        self.metrics.rejected();
                        return Err(CircuitOpen::new(None));
                    }
                    let next = Word {
                        issued: word.issued + 1,
                        ..word
                    };
                    match self.swap(current, next) {
                        Ok(()) => return Ok(permit(self, word.generation, true, true)),
                        Err(actual) => current = actual,
                    }
                }
            }
        }
    }

    fn swap(&self, current: u64, next: Word) -> Result<(), u64> {
        self.word
            .compare_exchange(current, next.pack(), Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
    }

    fn record(&self, generation: u32, probe: bool, verdict: Verdict) {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::unpack(current);
            if word.generation != generation {
                return; // admitted in an earlier period
            }
            match (word.state, probe) {
                (CLOSED, _) => return self.record_closed(word, verdict),
                (HALF_OPEN, true) => {
                    let failed =
                        verdict.failure || (verdict.slow && self.config.slow_call_rate.is_some());
                    if failed {
                        self.trip(word, Reason::ProbeFailed, verdict.retry_after);
                        return;
                    }
                    let succeeded = word.succeeded + 1;
                    let closes = u32::from(succeeded) >= self.config.half_open_probes;
                    let next = if closes {
                        word.next(CLOSED)
                    } else {
                        Word { succeeded, ..word }
                    };
                    match self.swap(current, next) {
                        Ok(()) => {
                            #[cfg(feature = "redis")]
                            if let Some(fleet) = &self.fleet {
                                fleet.probe_succeeded(word.generation);
                            }
                            if closes {
                                self.calls.clear();
                                self.consecutive.store(0, Ordering::Relaxed);
                                self.trips.store(0, Ordering::Relaxed);
                                self.emit(
                                    CircuitState::HalfOpen,
                                    CircuitState::Closed,
                                    Reason::ProbesSucceeded,
                                    None,
                                );
                            }
                            return;
                        }
                        Err(actual) => current = actual,
                    }
                }
                _ => return,
            }
        }
    }

    fn record_closed(&self, word: Word, verdict: Verdict) {
        // Only a time window needs to know the second.
        let second = match self.calls {
            Calls::Time(_) => self.second(Instant::now()),
            Calls::Count(_) => 0,
        };
        self.calls.record(second, verdict.failure, verdict.slow);
        let config = &self.config;
        if verdict.failure {
            let in_a_row = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
            if config
                .consecutive_failures
                .is_some_and(|limit| in_a_row >= limit)
            {
                return self.trip(word, Reason::ConsecutiveFailures, verdict.retry_after);
            }
        } else if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        // Rates are checked after every call once the window is full enough, as Resilience4j
        // does: a success can leave the rate above the threshold.
        let counts = self.calls.counts(second);
        if counts.calls < config.minimum_calls {
            return;
        }
        let reason = if config
            .failure_rate
            .is_some_and(|rate| counts.failure_rate() >= rate)
        {
            Reason::FailureRate
        } else if config
            .slow_call_rate
            .is_some_and(|rate| counts.slow_rate() >= rate)
        {
            Reason::SlowCallRate
        } else {
            return;
        };
        self.trip(word, reason, verdict.retry_after);
    }

    /// Opens the circuit from `word` (closed, or half-open after a failed probe).
    fn trip(&self, word: Word, reason: Reason, retry_after: Option<Duration>) {
        let now = Instant::now();
        let trips = self.trips.load(Ordering::Relaxed) + 1;
        let next = word.next(OPEN);
        // Deterministic jitter: the seed and the period's generation.
        let jitter = SmallRng::seed_from_u64(self.config.seed ^ u64::from(next.generation))
            .random_range(-1.0..1.0);
        let open_for = self.config.open_for(trips, retry_after, jitter);
        self.open_until
            .store(self.nanos(now + open_for), Ordering::Release);
        if self.swap(word.pack(), next).is_ok() {
            self.trips.store(trips, Ordering::Relaxed);
            #[cfg(feature = "redis")]
            if let Some(fleet) = &self.fleet
                && self.mode() == Mode::Normal
            {
                fleet.opened(word.generation, next.generation, now + open_for, trips);
            }
            let from = if word.state == HALF_OPEN {
                CircuitState::HalfOpen
            } else {
                CircuitState::Closed
            };
            self.emit(from, CircuitState::Open, reason, Some(open_for));
        }
    }

    fn return_probe(&self, generation: u32) {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::unpack(current);
            if word.generation != generation || word.state != HALF_OPEN || word.issued == 0 {
                return;
            }
            match self.swap(
                current,
                Word {
                    issued: word.issued - 1,
                    ..word
                },
            ) {
                Ok(()) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn emit(
        &self,
        from: CircuitState,
        to: CircuitState,
        reason: Reason,
        open_for: Option<Duration>,
    ) {
        self.metrics.transition(from, to, reason);
        tracing::info!(
            scope = %self.scope,
            from = from.as_str(),
            to = to.as_str(),
            ?reason,
            open_for = open_for.map(|d| d.as_secs_f64()),
            "circuit state changed"
        );
        let _ = self.events.send(CircuitEvent {
            scope: self.scope.clone(),
            from,
            to,
            reason,
            open_for,
        });
    }

    /// The state now, as users see it.
    pub(crate) fn state(&self) -> CircuitState {
        match self.mode() {
            Mode::ForcedOpen => CircuitState::ForcedOpen,
            Mode::Disabled => CircuitState::Disabled,
            Mode::MetricsOnly => CircuitState::MetricsOnly,
            Mode::Normal => match Word::unpack(self.word.load(Ordering::Acquire)).state {
                CLOSED => CircuitState::Closed,
                OPEN => CircuitState::Open,
                _ => CircuitState::HalfOpen,
            },
        }
    }

    /// Sets the mode by hand; back to normal also closes the circuit.
    pub(crate) fn set_mode(&self, mode: Mode) {
        let before = self.state();
        self.mode.store(mode_to_u8(mode), Ordering::Release);
        if mode == Mode::Normal {
            let word = Word::unpack(self.word.load(Ordering::Acquire));
            self.word.store(word.next(CLOSED).pack(), Ordering::Release);
            self.calls.clear();
            self.consecutive.store(0, Ordering::Relaxed);
            self.trips.store(0, Ordering::Relaxed);
        }
        let after = self.state();
        if before != after {
            self.emit(before, after, Reason::Manual, None);
        }
    }

    pub(crate) fn metrics(&self, now: Instant) -> CircuitMetrics {
        let state = self.state();
        let until = self.open_until.load(Ordering::Acquire);
        let at = self.nanos(now);
        CircuitMetrics {
            state,
            window: self.calls.counts(self.second(now)),
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            trips: self.trips.load(Ordering::Relaxed),
            open_remaining: (state == CircuitState::Open && until > at)
                .then(|| Duration::from_nanos(until - at)),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        #[cfg(feature = "redis")]
        if self.fleet.as_ref().is_some_and(|f| f.is_dirty()) {
            return false;
        }
        self.state() == CircuitState::Closed && self.consecutive.load(Ordering::Relaxed) == 0
    }

    /// The half-open word after the open `word`. With a fleet that answers, every probe slot
    /// starts taken: the worker frees those the fleet grants this process.
    fn half_open_from(&self, word: Word) -> Word {
        let next = word.next(HALF_OPEN);
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet
            && !fleet.hook.is_degraded()
        {
            return Word {
                issued: self.probe_slots(),
                ..next
            };
        }
        next
    }

    #[cfg(feature = "redis")]
    fn probe_slots(&self) -> u8 {
        u8::try_from(self.config.half_open_probes).unwrap_or(u8::MAX)
    }
}

/// Where the fleet puts a circuit.
#[cfg(feature = "redis")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Adopt {
    /// Open until `until`.
    Open { until: Instant, trips: u32 },
    /// Half-open, no probe slot granted yet.
    HalfOpen { trips: u32 },
    /// Closed, its counts forgotten.
    Closed,
}

/// A circuit's state word, as the fleet's worker reads it.
#[cfg(feature = "redis")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Local {
    pub(crate) generation: u32,
    pub(crate) state: CircuitState,
    /// Probe slots taken (by calls, or not granted by the fleet).
    pub(crate) issued: u8,
}

#[cfg(feature = "redis")]
impl Breaker {
    pub(crate) fn with_fleet(mut self, side: crate::fleet::FleetSide) -> Self {
        self.fleet = Some(side);
        self
    }

    pub(crate) fn fleet(&self) -> Option<&crate::fleet::FleetSide> {
        self.fleet.as_ref()
    }

    pub(crate) fn local(&self) -> Local {
        let word = Word::unpack(self.word.load(Ordering::Acquire));
        Local {
            generation: word.generation,
            state: match word.state {
                CLOSED => CircuitState::Closed,
                OPEN => CircuitState::Open,
                _ => CircuitState::HalfOpen,
            },
            issued: word.issued,
        }
    }

    /// Puts the circuit where the fleet says; the new period's generation.
    pub(crate) fn adopt(&self, to: Adopt) -> u32 {
        let before = self.local().state;
        let (state, after, trips) = match to {
            Adopt::Open { until, trips } => {
                self.open_until.store(self.nanos(until), Ordering::Release);
                (OPEN, CircuitState::Open, trips)
            }
            Adopt::HalfOpen { trips } => (HALF_OPEN, CircuitState::HalfOpen, trips),
            Adopt::Closed => {
                self.calls.clear();
                self.consecutive.store(0, Ordering::Relaxed);
                (CLOSED, CircuitState::Closed, 0)
            }
        };
        self.trips.store(trips, Ordering::Relaxed);
        let mut current = self.word.load(Ordering::Acquire);
        let next = loop {
            let mut next = Word::unpack(current).next(state);
            if state == HALF_OPEN && !self.fleet.as_ref().is_some_and(|f| f.hook.is_degraded()) {
                next.issued = self.probe_slots();
            }
            match self.swap(current, next) {
                Ok(()) => break next,
                Err(actual) => current = actual,
            }
        };
        let open_for = match to {
            Adopt::Open { until, .. } => Some(until.saturating_duration_since(Instant::now())),
            _ => None,
        };
        if before != after || state == OPEN {
            self.emit(before, after, Reason::Fleet, open_for);
        }
        next.generation
    }

    /// Frees `n` probe slots the fleet granted, if the circuit is still half-open in
    /// `generation`.
    pub(crate) fn grant(&self, generation: u32, n: u32) -> bool {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::unpack(current);
            if word.generation != generation || word.state != HALF_OPEN {
                return false;
            }
            let freed = u8::try_from(n).unwrap_or(u8::MAX).min(word.issued);
            match self.swap(
                current,
                Word {
                    issued: word.issued - freed,
                    ..word
                },
            ) {
                Ok(()) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes back the granted probe slots no call used: how many.
    pub(crate) fn take_unused(&self, generation: u32) -> u32 {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let word = Word::unpack(current);
            let slots = self.probe_slots();
            if word.generation != generation || word.state != HALF_OPEN || word.issued >= slots {
                return 0;
            }
            match self.swap(
                current,
                Word {
                    issued: slots,
                    ..word
                },
            ) {
                Ok(()) => return u32::from(slots - word.issued),
                Err(actual) => current = actual,
            }
        }
    }

    /// Redis went away while half-open: a new half-open period whose probes this process
    /// counts alone.
    pub(crate) fn probe_locally(&self, generation: u32) {
        let current = self.word.load(Ordering::Acquire);
        let word = Word::unpack(current);
        if word.generation == generation && word.state == HALF_OPEN {
            let _ = self.swap(current, word.next(HALF_OPEN));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tollgate_core::Provider;

    use super::*;

    /// Real threads racing to probe a half-open circuit: never more than the configured
    /// number get through, however the compare-exchanges interleave.
    #[test]
    fn racing_threads_never_get_more_probes_than_allowed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        for _ in 0..50 {
            let config = Arc::new(CircuitConfig {
                half_open_probes: 3,
                ..CircuitConfig::default()
            });
            let (events, _) = broadcast::channel(16);
            let breaker = Arc::new(Breaker::new(
                Scope::new(Provider::OpenAi),
                config,
                Mode::Normal,
                Instant::now(),
                events,
            ));
            // Open, with the open period already over.
            let word = Word::unpack(breaker.word.load(Ordering::Acquire)).next(OPEN);
            breaker.word.store(word.pack(), Ordering::Release);
            let granted = Arc::new(AtomicUsize::new(0));
            let permits = Arc::new(std::sync::Mutex::new(Vec::new()));
            std::thread::scope(|s| {
                for _ in 0..8 {
                    let (breaker, granted, permits) =
                        (breaker.clone(), granted.clone(), permits.clone());
                    s.spawn(move || {
                        for _ in 0..20 {
                            if let Ok(permit) = breaker.clone().admit() {
                                granted.fetch_add(1, Ordering::SeqCst);
                                permits.lock().unwrap().push(permit);
                            }
                        }
                    });
                }
            });
            assert_eq!(granted.load(Ordering::SeqCst), 3);
            assert_eq!(breaker.state(), CircuitState::HalfOpen);
        }
    }

    #[test]
    fn the_state_word_round_trips() {
        let word = Word {
            generation: 0xDEAD_BEEF,
            state: HALF_OPEN,
            issued: 200,
            succeeded: 7,
        };
        assert_eq!(Word::unpack(word.pack()), word);
        let next = word.next(CLOSED);
        assert_eq!(
            (next.generation, next.state, next.issued, next.succeeded),
            (0xDEAD_BEF0, CLOSED, 0, 0)
        );
    }
}
