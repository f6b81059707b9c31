//! [`CacheHandle`]: reading the counters, dropping entries by hand, serving stale answers.

use std::fmt;
use std::sync::Arc;

use crate::key::CacheKey;
use crate::layer::{Core, Settings};
use crate::stale::StaleLookup;
use crate::stats::CacheStats;

/// Reads and clears the cache of a [`CacheLayer`](crate::CacheLayer).
///
/// # Clone
///
/// Clones act on the same cache.
#[derive(Clone)]
pub struct CacheHandle {
    pub(crate) core: Arc<Core>,
    /// How the layer reads requests, for stale lookups.
    pub(crate) settings: Arc<Settings>,
}

impl CacheHandle {
    /// The counters now.
    ///
    /// `entries` and `bytes` follow evictions as the cache carries them out, in batches
    /// amortised over later calls: [`run_pending_tasks`](Self::run_pending_tasks) first for
    /// exact figures.
    pub fn snapshot(&self) -> CacheStats {
        let in_flight = self.core.flights.len() as u64;
        self.core.store.counters.snapshot(in_flight)
    }

    /// Drops the entry under `key` (from memory; the second level keeps its copy until it
    /// expires there).
    pub fn invalidate(&self, key: &CacheKey) {
        self.core.store.invalidate(key);
    }

    /// Drops every entry (from memory).
    pub fn clear(&self) {
        self.core.store.clear();
    }

    /// A service that answers a request from its stored entry, even one past its time to live
    /// (by up to [`max_staleness`](crate::CacheConfig::max_staleness)), and never calls
    /// upstream: the fallback of a `FallbackLayer` above the cache, for stale-on-error (see
    /// the [crate docs](crate#stale-on-error)).
    pub fn stale_lookup(&self) -> StaleLookup {
        StaleLookup::new(self.core.clone(), self.settings.clone())
    }

    /// Carries out the evictions and removals the cache has pending now, rather than over the
    /// next calls.
    pub fn run_pending_tasks(&self) {
        self.core.store.run_pending_tasks();
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("stats", &self.snapshot())
            .finish()
    }
}
