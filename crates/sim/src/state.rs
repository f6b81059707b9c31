//! The simulator's shared state: keys and their limits, counters, the log, the clock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::request::Parts;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tollgate_core::CredentialId;

use crate::batch::Store;
use crate::config::{Faults, KeyConfig, Latency, SimConfig};
use crate::limiter::{Charge, KeyLimiter};
use crate::prompt_cache::PromptCache;
use crate::route::api_key;
use crate::stats::{LogEntry, SimStats};

/// State shared by every connection and request.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    started: Instant,
    started_wall: SystemTime,
    seq: AtomicU64,
    state: Mutex<State>,
}

/// The faults and latency in force at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conditions<'a> {
    pub(crate) faults: Faults,
    pub(crate) latency: Latency,
    pub(crate) phase: Option<&'a str>,
}

/// Everything that changes, behind one lock (held for microseconds, never across an await).
#[derive(Debug)]
pub(crate) struct State {
    keys: Vec<KeyState>,
    by_secret: HashMap<String, usize>,
    pub(crate) stats: SimStats,
    log: VecDeque<LogEntry>,
    pub(crate) batches: Store,
}

/// One API key.
#[derive(Debug)]
pub(crate) struct KeyState {
    pub(crate) name: String,
    pub(crate) limiter: KeyLimiter,
    /// Whether responses carry the rate-limit and wait headers.
    pub(crate) rate_limit_headers: bool,
    pub(crate) quota_exhausted: bool,
    revoked_after: Option<Duration>,
    /// The prefixes of the prompts this key sent, for prompt caching.
    pub(crate) prompt_cache: PromptCache,
}

/// Why a key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRefusal {
    /// No key was sent.
    Missing,
    /// The key is not known, or was revoked.
    Invalid,
}

impl Shared {
    pub(crate) fn new(config: SimConfig) -> Self {
        let now = Instant::now();
        let state = State {
            keys: Vec::new(),
            by_secret: HashMap::new(),
            stats: SimStats::default(),
            log: VecDeque::new(),
            batches: Store::default(),
        };
        let shared = Self {
            config,
            started: now,
            started_wall: SystemTime::now(),
            seq: AtomicU64::new(0),
            state: Mutex::new(state),
        };
        shared.lock().load_keys(&shared.config, now);
        shared
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Finds the key `parts` carry as every route does (creating it if unknown keys are
    /// accepted), names it in `entry`, and tells whether its quota is exhausted (read under the
    /// same lock: a reset may renumber the keys).
    pub(crate) fn authenticate(
        &self,
        parts: &Parts,
        entry: &mut LogEntry,
    ) -> Result<bool, KeyRefusal> {
        let now = Instant::now();
        let mut state = self.lock();
        let secret = api_key(parts);
        let key = state.key(secret.as_deref(), &self.config, now, self.elapsed(now))?;
        let key = state.key_state(key);
        entry.key = Some(key.name.clone());
        Ok(key.quota_exhausted)
    }

    /// The next request number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Time since the start.
    pub(crate) fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// The simulator's wall clock: the start's wall time moved on by tokio time, so that
    /// paused-time tests see `date` headers and resets move with their clock.
    pub(crate) fn wall(&self, now: Instant) -> SystemTime {
        self.started_wall + self.elapsed(now)
    }

    /// The random source of request `seq`: the same seed and arrival order give the same draws,
    /// whatever the interleaving of the requests' work.
    pub(crate) fn rng(&self, seq: u64) -> SmallRng {
        SmallRng::seed_from_u64(self.config.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The faults and latency of the phase in force at `now`.
    pub(crate) fn conditions(&self, now: Instant) -> Conditions<'_> {
        let base = Conditions {
            faults: self.config.faults,
            latency: self.config.latency,
            phase: None,
        };
        let phases = &self.config.phases;
        let total: Duration = phases.iter().map(|p| p.duration).sum();
        if total.is_zero() {
            return base;
        }
        let mut at = self.elapsed(now);
        if self.config.repeat_phases {
            at = Duration::from_nanos((at.as_nanos() % total.as_nanos()) as u64);
        }
        let mut end = Duration::ZERO;
        let last = phases.len() - 1;
        for (i, phase) in phases.iter().enumerate() {
            end += phase.duration;
            if at < end || i == last {
                return Conditions {
                    faults: phase.faults.unwrap_or(base.faults),
                    latency: phase.latency.unwrap_or(base.latency),
                    phase: Some(&phase.name),
                };
            }
        }
        base
    }
}

impl State {
    fn load_keys(&mut self, config: &SimConfig, now: Instant) {
        self.keys.clear();
        self.by_secret.clear();
        for key in &config.keys {
            self.add_key(key, config, now);
        }
    }

    fn add_key(&mut self, key: &KeyConfig, config: &SimConfig, now: Instant) -> usize {
        let name = key
            .name
            .clone()
            .unwrap_or_else(|| CredentialId::from_secret(key.key.as_bytes()).to_string());
        let limits = key.limits_over(&config.limits);
        self.keys.push(KeyState {
            name,
            limiter: KeyLimiter::new(limits, now),
            rate_limit_headers: limits.rate_limit_headers,
            quota_exhausted: key.quota_exhausted,
            revoked_after: key.revoked_after,
            prompt_cache: PromptCache::default(),
        });
        let index = self.keys.len() - 1;
        self.by_secret.insert(key.key.clone(), index);
        index
    }

    /// The key `secret` names, created with the default limits if unknown keys are accepted.
    pub(crate) fn key(
        &mut self,
        secret: Option<&str>,
        config: &SimConfig,
        now: Instant,
        elapsed: Duration,
    ) -> Result<usize, KeyRefusal> {
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or(KeyRefusal::Missing)?;
        let index = match self.by_secret.get(secret) {
            Some(&index) => index,
            None if config.accepts_unknown_keys() => {
                self.add_key(&KeyConfig::new(secret), config, now)
            }
            None => return Err(KeyRefusal::Invalid),
        };
        if self.keys[index]
            .revoked_after
            .is_some_and(|at| elapsed >= at)
        {
            return Err(KeyRefusal::Invalid);
        }
        Ok(index)
    }

    pub(crate) fn key_state(&mut self, index: usize) -> &mut KeyState {
        &mut self.keys[index]
    }

    /// Counts the request and keeps it in the bounded log.
    pub(crate) fn record(&mut self, entry: LogEntry, capacity: usize) {
        let stats = &mut self.stats;
        stats.received += 1;
        match entry.rejection {
            Some(reason) => *stats.rejected.entry(reason).or_default() += 1,
            None if (200..300).contains(&entry.status) => stats.accepted += 1,
            None => {}
        }
        if entry.rejection.is_none() && entry.status != 0 {
            stats.input_tokens += entry.input_tokens;
            stats.cached_input_tokens += entry.cached_input_tokens;
            if let Some(key) = &entry.key {
                let usage = stats.keys.entry(key.clone()).or_default();
                usage.requests += 1;
                usage.input_tokens += entry.input_tokens;
                usage.cached_input_tokens += entry.cached_input_tokens;
                usage.output_tokens += entry.output_tokens;
            }
        }
        if capacity > 0 {
            if self.log.len() == capacity {
                self.log.pop_front();
            }
            self.log.push_back(entry);
        }
    }

    pub(crate) fn log(&self) -> Vec<LogEntry> {
        self.log.iter().cloned().collect()
    }

    /// Counters, log and limits back to the start; in-flight requests keep their slots.
    pub(crate) fn reset(&mut self, config: &SimConfig, now: Instant) {
        let in_flight = self.stats.in_flight;
        self.stats = SimStats {
            in_flight,
            ..SimStats::default()
        };
        self.log.clear();
        self.load_keys(config, now);
    }
}

/// A request being served: holds its in-flight slot and, when the answer is done (or
/// abandoned), frees it and refunds the part of the estimate the answer did not use.
#[derive(Debug)]
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    key: usize,
    unused: Charge,
    admitted: Instant,
}

impl InFlight {
    /// Takes a slot for a request admitted at `admitted`; `state` is the locked state of
    /// `shared`.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        state: &mut State,
        key: usize,
        unused: Charge,
        admitted: Instant,
    ) -> Self {
        state.stats.in_flight += 1;
        state.stats.max_in_flight = state.stats.max_in_flight.max(state.stats.in_flight);
        Self {
            shared: shared.clone(),
            key,
            unused,
            admitted,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        state.stats.in_flight = state.stats.in_flight.saturating_sub(1);
        if let Some(key) = state.keys.get_mut(self.key) {
            key.limiter.refund(self.unused, self.admitted, now);
        }
    }
}
