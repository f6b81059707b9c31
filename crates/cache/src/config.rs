//! How much the cache holds and for how long.

use std::time::Duration;

use tollgate_core::error::ConfigError;

/// The bounds of a cache. [`Default`]: 10,000 entries and 256 MiB at most, 4 MiB per entry,
/// one hour to live, no idle timeout, no stale answers kept, identical requests in flight
/// coalesced.
///
/// Calls in flight are bounded too: each holds at most `max_entry_bytes` of body (or 64 KiB,
/// if that is larger), plus one upstream frame, however large the answer and however slowly
/// its callers read it (see [`max_entry_bytes`](Self::max_entry_bytes)).
///
/// Both bounds hold at once: every entry weighs at least `max_bytes / max_entries`, and the
/// cache evicts the least recently used entries while the weights add up to more than
/// `max_bytes` (so a cache of small entries stops at `max_entries`, one of large entries at
/// `max_bytes`). Moka evicts in batches amortised over the calls: between two batches the
/// cache holds up to a few hundred writes more (in the test of 100,000 inserts by four callers
/// at once, a sixth over `max_bytes` at the peak), never more than that.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct CacheConfig {
    /// The most entries kept.
    pub max_entries: u64,
    /// The most bytes kept: bodies, headers and a small fixed overhead per entry.
    pub max_bytes: u64,
    /// A response larger than this (or than `max_bytes`, or 4 GiB) is answered but not
    /// stored.
    ///
    /// It also bounds what a call in flight records. Up to it, the call keeps every frame (to
    /// store them, and for identical requests that join, who read from the first) and reads
    /// the upstream at its own pace. Past it, the answer will not be stored: the call records
    /// no more, identical requests no longer join it (they make their own call), each frame
    /// is freed once every caller has read it, and the upstream is read no more than 64 KiB
    /// ahead of the slowest caller — a caller that stops reading pauses the upstream read
    /// until it reads on or leaves.
    pub max_entry_bytes: u64,
    /// How long an entry is served after it was stored ("1h").
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub time_to_live: Duration,
    /// How long an entry that nobody asks for is kept ("10m"; none by default).
    #[cfg_attr(
        feature = "serde",
        serde(with = "tollgate_core::config::duration::option")
    )]
    pub time_to_idle: Option<Duration>,
    /// How long past its time to live (and idle timeout) an entry is kept for a
    /// [stale lookup](crate::CacheHandle::stale_lookup) to serve when the upstream is
    /// unavailable ("10m"; 0 by default: nothing is kept past its time). Ordinary lookups
    /// never serve such an entry. The entries kept count against `max_entries` and
    /// `max_bytes` like fresh ones.
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub max_staleness: Duration,
    /// Whether identical requests in flight at once share one upstream call.
    pub coalesce: bool,
    /// A second level in Redis, shared by every replica (the `redis` feature; `LlmStack`
    /// connects it). Without it, answers are kept in this process only.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub redis: Option<tollgate_core::config::RedisSettings>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 4 * 1024 * 1024,
            time_to_live: Duration::from_secs(3600),
            time_to_idle: None,
            max_staleness: Duration::ZERO,
            coalesce: true,
            redis: None,
        }
    }
}

impl CacheConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// The first invalid field, by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(redis) = &self.redis {
            redis.validate().map_err(|e| e.within("redis"))?;
        }
        if self.max_entries == 0 {
            return Err(ConfigError::new("max_entries", 0, "must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::new("max_bytes", 0, "must be at least 1"));
        }
        if self.max_entry_bytes == 0 {
            return Err(ConfigError::new("max_entry_bytes", 0, "must be at least 1"));
        }
        if self.floor_weight() > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "max_entries",
                self.max_entries,
                "leaves more than 4 GiB per entry: raise it or lower max_bytes",
            ));
        }
        if self.time_to_live.is_zero() {
            return Err(ConfigError::new("time_to_live", "0s", "must be positive"));
        }
        if self.time_to_idle.is_some_and(|idle| idle.is_zero()) {
            return Err(ConfigError::new("time_to_idle", "0s", "must be positive"));
        }
        // The store keeps an entry its time to live (or idle) plus the staleness allowed, and
        // moka refuses (panics on) anything past 1,000 years.
        let longest = Duration::from_secs(1_000 * 365 * 24 * 60 * 60);
        let kept = |time: Duration| {
            time.checked_add(self.max_staleness)
                .is_some_and(|kept| kept <= longest)
        };
        if self.max_staleness > longest {
            return Err(ConfigError::new(
                "max_staleness",
                format!("{:?}", self.max_staleness),
                "must be at most 1,000 years",
            ));
        }
        if !kept(self.time_to_live) {
            return Err(ConfigError::new(
                "time_to_live",
                format!("{:?}", self.time_to_live),
                "plus max_staleness must be at most 1,000 years",
            ));
        }
        if self.time_to_idle.is_some_and(|idle| !kept(idle)) {
            return Err(ConfigError::new(
                "time_to_idle",
                format!("{:?}", self.time_to_idle.unwrap_or_default()),
                "plus max_staleness must be at most 1,000 years",
            ));
        }
        Ok(())
    }

    /// How long an entry is kept at most: its time to live, and the staleness allowed past it.
    pub(crate) fn retention(&self) -> Duration {
        self.time_to_live.saturating_add(self.max_staleness)
    }

    /// The most an entry may weigh.
    pub(crate) fn entry_cap(&self) -> u64 {
        self.max_entry_bytes
            .min(self.capacity())
            .min(u64::from(u32::MAX))
    }

    /// The least an entry weighs: `max_bytes / max_entries`, so that `max_entries` entries
    /// at least fill the [capacity](Self::capacity).
    pub(crate) fn floor_weight(&self) -> u64 {
        (self.max_bytes / self.max_entries).max(1)
    }

    /// The weight the cache holds at most: `max_bytes`, rounded down to a whole number of
    /// floor weights so that no more than `max_entries` entries fit either.
    pub(crate) fn capacity(&self) -> u64 {
        self.max_bytes
            .min(self.floor_weight().saturating_mul(self.max_entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(CacheConfig::default().validate().is_ok());
        let bad = |config: CacheConfig| config.validate().unwrap_err().field().to_owned();
        let base = CacheConfig::default;
        assert_eq!(
            bad(CacheConfig {
                max_entries: 0,
                ..base()
            }),
            "max_entries"
        );
        assert_eq!(
            bad(CacheConfig {
                max_entry_bytes: 0,
                ..base()
            }),
            "max_entry_bytes"
        );
        assert_eq!(
            bad(CacheConfig {
                time_to_live: Duration::ZERO,
                ..base()
            }),
            "time_to_live"
        );
        assert_eq!(
            bad(CacheConfig {
                time_to_idle: Some(Duration::ZERO),
                ..base()
            }),
            "time_to_idle"
        );
        assert_eq!(
            bad(CacheConfig {
                max_entries: 1,
                max_bytes: 1 << 40,
                max_entry_bytes: 1,
                ..base()
            }),
            "max_entries"
        );
        assert_eq!(
            bad(CacheConfig {
                max_staleness: Duration::MAX,
                ..base()
            }),
            "max_staleness"
        );
        let centuries = Duration::from_secs(600 * 365 * 24 * 60 * 60);
        assert_eq!(
            bad(CacheConfig {
                time_to_live: centuries,
                max_staleness: centuries,
                ..base()
            }),
            "time_to_live"
        );
        assert_eq!(
            bad(CacheConfig {
                time_to_idle: Some(Duration::from_secs(u64::MAX)),
                ..base()
            }),
            "time_to_idle"
        );
    }

    #[test]
    fn both_bounds_hold_at_once() {
        for (max_entries, max_bytes) in [(3, 10), (40, 100), (10, 1 << 20), (100, 7), (1, 1)] {
            let config = CacheConfig {
                max_entries,
                max_bytes,
                ..CacheConfig::default()
            };
            let (floor, capacity) = (config.floor_weight(), config.capacity());
            assert!(capacity <= max_bytes, "{config:?}");
            assert!(capacity / floor <= max_entries, "{config:?}");
            assert!(
                capacity + max_entries > max_bytes,
                "little is lost: {config:?}"
            );
        }
        let small = CacheConfig {
            max_bytes: 1000,
            ..CacheConfig::default()
        };
        assert_eq!(small.entry_cap(), 1000);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn loads_with_human_durations() {
        let config: CacheConfig = serde_json::from_str(
            r#"{"max_entries": 500, "time_to_live": "30m", "time_to_idle": "5m", "max_staleness": "10m"}"#,
        )
        .unwrap();
        assert_eq!(config.max_entries, 500);
        assert_eq!(config.time_to_live, Duration::from_secs(1800));
        assert_eq!(config.time_to_idle, Some(Duration::from_secs(300)));
        assert_eq!(config.max_staleness, Duration::from_secs(600));
        assert_eq!(config.max_bytes, CacheConfig::default().max_bytes);
        assert!(serde_json::from_str::<CacheConfig>(r#"{"ttl": "1h"}"#).is_err());
    }
}
