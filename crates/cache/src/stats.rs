//! What the cache did: counters every clone of a layer shares.

use std::sync::atomic::{AtomicU64, Ordering};

/// The cache's counters at one moment, from [`CacheHandle::snapshot`](crate::CacheHandle::snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Requests answered from memory.
    pub hits: u64,
    /// Answers served past their time to live by a
    /// [stale lookup](crate::CacheHandle::stale_lookup), the upstream being unavailable.
    pub stale_hits: u64,
    /// Requests answered from the shared second level (Redis); always 0 without it.
    pub second_level_hits: u64,
    /// Cacheable requests that were not in memory and started a call of their own (to the
    /// second level, then upstream).
    pub misses: u64,
    /// Requests that joined an identical request's call in flight instead of making their own.
    pub coalesced: u64,
    /// Requests the cache let through untouched: not cacheable, or `cache-control: no-store`.
    pub bypasses: u64,
    /// Responses stored.
    pub stored: u64,
    /// Responses read to their end but not stored: not a 2xx, a failure in the stream (an
    /// `event: error`, a cut), or larger than `max_entry_bytes`.
    pub not_stored: u64,
    /// Entries evicted to stay within `max_entries` and `max_bytes`.
    pub evictions: u64,
    /// Entries found past their time to live or idle timeout.
    pub expirations: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now, as weighed against `max_bytes` (bodies, headers, a small overhead).
    pub bytes: u64,
    /// Calls in flight now that others can join.
    pub in_flight: u64,
    /// Bytes of body the calls in flight hold now for their callers: what they record (at most
    /// `max_entry_bytes` each), and past that what their slowest caller has yet to read (a
    /// small window each). Answers already stored are in `bytes`.
    pub in_flight_bytes: u64,
}

/// The counters behind [`CacheStats`]; with the `metrics` feature each also feeds a metric
/// (`docs/metrics.md`), registered once when the layer is built.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) hits: Count,
    pub(crate) stale_hits: Count,
    pub(crate) second_level_hits: Count,
    pub(crate) misses: Count,
    pub(crate) coalesced: Count,
    pub(crate) bypasses: Count,
    pub(crate) stored: Count,
    pub(crate) not_stored: Count,
    pub(crate) evictions: Count,
    pub(crate) expirations: Count,
    pub(crate) entries: Level,
    pub(crate) bytes: Level,
    pub(crate) in_flight_bytes: Level,
}

impl Default for Counters {
    fn default() -> Self {
        let lookups = |result| Count::new("tollgate_cache_lookups_total", Some(result));
        Self {
            hits: lookups("hit"),
            stale_hits: lookups("stale"),
            second_level_hits: lookups("second_level_hit"),
            misses: lookups("miss"),
            coalesced: lookups("coalesced"),
            bypasses: lookups("bypass"),
            stored: Count::new("tollgate_cache_stored_total", None),
            not_stored: Count::new("tollgate_cache_not_stored_total", None),
            evictions: Count::new("tollgate_cache_evictions_total", None),
            expirations: Count::new("tollgate_cache_expirations_total", None),
            entries: Level::new("tollgate_cache_entries"),
            bytes: Level::new("tollgate_cache_bytes"),
            in_flight_bytes: Level::new("tollgate_cache_in_flight_bytes"),
        }
    }
}

/// A counter of [`CacheStats`], and its metric.
#[derive(Debug)]
pub(crate) struct Count {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    metric: metrics::Counter,
}

impl Count {
    /// `result`: the `result` label of `tollgate_cache_lookups_total`.
    fn new(name: &'static str, result: Option<&'static str>) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = (name, result);
        Self {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: match result {
                Some(result) => metrics::counter!(name, "result" => result),
                None => metrics::counter!(name),
            },
        }
    }

    pub(crate) fn load(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A level of [`CacheStats`] (entries, bytes), and its gauge.
#[derive(Debug)]
pub(crate) struct Level {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    metric: metrics::Gauge,
}

impl Level {
    fn new(name: &'static str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = name;
        Self {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: metrics::gauge!(name),
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metric.increment(n as f64);
    }

    pub(crate) fn sub(&self, n: u64) {
        self.value.fetch_sub(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metric.decrement(n as f64);
    }

    pub(crate) fn load(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Adds one.
pub(crate) fn bump(counter: &Count) {
    counter.value.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "metrics")]
    counter.metric.increment(1);
}

impl Counters {
    pub(crate) fn snapshot(&self, in_flight: u64) -> CacheStats {
        CacheStats {
            hits: self.hits.load(),
            stale_hits: self.stale_hits.load(),
            second_level_hits: self.second_level_hits.load(),
            misses: self.misses.load(),
            coalesced: self.coalesced.load(),
            bypasses: self.bypasses.load(),
            stored: self.stored.load(),
            not_stored: self.not_stored.load(),
            evictions: self.evictions.load(),
            expirations: self.expirations.load(),
            entries: self.entries.load(),
            bytes: self.bytes.load(),
            in_flight,
            in_flight_bytes: self.in_flight_bytes.load(),
        }
    }
}
