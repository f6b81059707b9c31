//! What the cache did: counters every clone of a layer shares.

use std::sync::atomic::{AtomicU64, Ordering};

/// The cache's counters at one moment, from [`CacheHandle::stats`](crate::CacheHandle::stats).
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
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) stale_hits: AtomicU64,
    pub(crate) second_level_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) not_stored: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) expirations: AtomicU64,
    pub(crate) entries: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, in_flight: u64) -> CacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            hits: read(&self.hits),
            stale_hits: read(&self.stale_hits),
            second_level_hits: read(&self.second_level_hits),
            misses: read(&self.misses),
            coalesced: read(&self.coalesced),
            bypasses: read(&self.bypasses),
            stored: read(&self.stored),
            not_stored: read(&self.not_stored),
            evictions: read(&self.evictions),
            expirations: read(&self.expirations),
            entries: read(&self.entries),
            bytes: read(&self.bytes),
            in_flight,
        }
    }
}
