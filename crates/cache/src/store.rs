//! The first level: a bounded, concurrent map in memory (moka).
//!
//! # Why moka's synchronous cache
//!
//! A lookup takes a few hundred nanoseconds and never waits on I/O, so it runs inside `call`
//! and a hit is answered with a future that is ready at once — no task, no boxed future.
//! `moka::future::Cache` would make every lookup an `async fn` whose future cannot be named,
//! hence a `Box` per call. Moka's housekeeping (eviction, expiry) is amortised over the calls
//! and takes no lock that a caller waits on.
//!
//! # Two clocks
//!
//! Freshness is decided on tokio's clock: each entry keeps the [`Instant`] it was stored and
//! last used, and a lookup that finds it past its time to live (or idle) treats it as absent.
//! So `#[tokio::test(start_paused = true)]` tests see entries expire exactly. Moka expires the
//! same entries on its own (wall) clock with the same durations, lengthened by
//! `max_staleness` (so that a [stale lookup](crate::CacheHandle::stale_lookup) finds them):
//! that frees their memory when nobody asks for them again.

use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::entry::Entry;
use crate::key::CacheKey;
use crate::stats::{Counters, bump};

/// What a lookup found.
pub(crate) enum Lookup {
    Fresh(Arc<Entry>),
    Expired,
    Absent,
}

pub(crate) struct Store {
    cache: moka::sync::Cache<CacheKey, Arc<Entry>>,
    pub(crate) counters: Arc<Counters>,
    time_to_live: Duration,
    time_to_idle: Option<Duration>,
    max_staleness: Duration,
    max_entry_bytes: u64,
}

impl Store {
    pub(crate) fn new(config: &CacheConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let floor = config.floor_weight();
        let listener = {
            let counters = counters.clone();
            move |_key: Arc<CacheKey>, entry: Arc<Entry>, cause: RemovalCause| {
                counters.entries.sub(1);
                counters.bytes.sub(entry.size);
                match cause {
                    RemovalCause::Size => bump(&counters.evictions),
                    RemovalCause::Expired => bump(&counters.expirations),
                    RemovalCause::Explicit | RemovalCause::Replaced => {}
                }
            }
        };
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(config.capacity())
            .weigher(move |_key: &CacheKey, entry: &Arc<Entry>| {
                u32::try_from(entry.size.max(floor)).unwrap_or(u32::MAX)
            })
            // A response just paid for is always kept: TinyLFU, moka's default, may refuse it
            // in favour of older, more popular ones, and the next identical request pays again.
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(listener)
            .time_to_live(config.retention());
        if let Some(idle) = config.time_to_idle {
            builder = builder.time_to_idle(idle.saturating_add(config.max_staleness));
        }
        Self {
            cache: builder.build(),
            counters,
            time_to_live: config.time_to_live,
            time_to_idle: config.time_to_idle,
            max_staleness: config.max_staleness,
            max_entry_bytes: config.entry_cap(),
        }
    }

    /// The entry under `key`, if it is fresh at `now`.
    pub(crate) fn get(&self, key: &CacheKey, now: Instant) -> Lookup {
        match self.cache.get(key) {
            Some(entry) if entry.use_at(now, self.time_to_live, self.time_to_idle) => {
                Lookup::Fresh(entry)
            }
            // Left in place: a fresh answer replaces it, or moka's own expiry removes it.
            Some(_) => Lookup::Expired,
            None => Lookup::Absent,
        }
    }

    /// The entry under `key` if it is at most `max_staleness` (and the configured most) past
    /// its time at `now`, with its age; fresh entries too. It does not count as used.
    pub(crate) fn get_stale(
        &self,
        key: &CacheKey,
        now: Instant,
        max_staleness: Duration,
    ) -> Option<(Arc<Entry>, Duration)> {
        let entry = self.cache.get(key)?;
        let age = entry.stale_age(
            now,
            self.time_to_live,
            self.time_to_idle,
            max_staleness.min(self.max_staleness),
        )?;
        Some((entry, age))
    }

    pub(crate) fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Stores `entry` under `key`, unless it is larger than an entry may be.
    pub(crate) fn insert(&self, key: CacheKey, entry: Arc<Entry>) -> bool {
        if entry.size > self.max_entry_bytes {
            bump(&self.counters.not_stored);
            return false;
        }
        self.counters.entries.add(1);
        self.counters.bytes.add(entry.size);
        bump(&self.counters.stored);
        self.cache.insert(key, entry);
        true
    }

    pub(crate) fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    pub(crate) fn invalidate(&self, key: &CacheKey) {
        self.cache.invalidate(key);
    }

    pub(crate) fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub(crate) fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}
