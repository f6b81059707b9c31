//! [`CacheHandle`]: reading the counters and dropping entries by hand.

use std::fmt;
use std::sync::Arc;

use crate::key::CacheKey;
use crate::layer::Core;
use crate::stats::CacheStats;

/// Reads and clears the cache of a [`CacheLayer`](crate::CacheLayer).
///
/// # Clone
///
/// Clones act on the same cache.
#[derive(Clone)]
pub struct CacheHandle {
    pub(crate) core: Arc<Core>,
}

impl CacheHandle {
    /// The counters now.
    ///
    /// `entries` and `bytes` follow evictions as the cache carries them out, in batches
    /// amortised over later calls: [`run_pending_tasks`](Self::run_pending_tasks) first for
    /// exact figures.
    pub fn stats(&self) -> CacheStats {
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

    /// Carries out the evictions and removals the cache has pending now, rather than over the
    /// next calls.
    pub fn run_pending_tasks(&self) {
        self.core.store.run_pending_tasks();
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("stats", &self.stats())
            .finish()
    }
}
