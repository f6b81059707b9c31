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

    /// Drops every entry (from memory; the second level, and other processes' memory, keep
    /// theirs: [`clear_everywhere`](Self::clear_everywhere) clears those too).
    pub fn clear(&self) {
        self.core.store.clear();
    }

    /// Drops every entry from memory, then from the second level, and has every process
    /// sharing that second level drop its own within a
    /// [`CLEAR_CHECK_INTERVAL`](crate::redis::CLEAR_CHECK_INTERVAL) (see
    /// [Clearing](crate::redis#clearing)); how many entries left the second level (`None`
    /// without one).
    ///
    /// # Errors
    ///
    /// When Redis fails or does not answer in time: memory is cleared, the second level and
    /// the other processes may not be.
    #[cfg(feature = "redis")]
    pub async fn clear_everywhere(&self) -> Result<Option<u64>, tollgate_core::BoxError> {
        self.core.store.clear();
        match &self.settings.second_level {
            Some(store) => store.clear().await.map(Some),
            None => Ok(None),
        }
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
