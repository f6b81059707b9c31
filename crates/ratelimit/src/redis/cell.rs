//! One dimension of one scope in a [`RedisStore`](super::RedisStore): where its key is, its
//! quota, and this process's lease on it.
//!
//! The lease is a real reservation in Redis, granted at the moment it was asked for, that this
//! process spends locally with a compare-exchange until it runs short. Its units may be spent
//! until `hold` after the grant; whatever is left then goes back to Redis. Spending a unit up
//! to `hold` late could overfill the provider's bucket after a quiet spell (its refill was
//! capped while the lease sat idle), so a cell with leases keeps `hold` of refill in reserve:
//! its reservations see a bucket `hold` shallower (`margin`), and however late the leased units
//! are spent, the fleet stays within the quota.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::gcra::View;
use crate::quota::Quota;

/// The lease's units in the low bits of one word, a generation above them: a unit taken from a
/// lease that was given back meanwhile is never put back into the next one.
const UNITS: u64 = (1 << 40) - 1;
const GENERATION: u64 = 1 << 40;

#[derive(Debug)]
pub(crate) struct Cell {
    pub(crate) quota: Quota,
    /// The Redis key: `prefix:{scope}:dimension`.
    pub(crate) key: Arc<str>,
    /// Nanoseconds per unit, as in [`gcra`](crate::gcra).
    pub(crate) interval: u64,
    /// The bucket depth in nanoseconds.
    pub(crate) tolerance: u64,
    /// The quota's period in nanoseconds (a key lives that long past its TAT).
    pub(crate) period: u64,
    /// Units leased at a time (0: no lease).
    pub(crate) lease: u64,
    /// Nanoseconds of refill kept in reserve because leased units may be spent late.
    pub(crate) margin: u64,
    /// How long leased units may wait here, in nanoseconds.
    hold: u64,
    /// Generation and unspent units of the lease.
    word: AtomicU64,
    /// When the lease's units must have been spent, in the clock's local nanoseconds.
    expires: AtomicU64,
    /// The TAT Redis last reported, in local nanoseconds.
    tat: AtomicU64,
}

impl Cell {
    pub(crate) fn new(quota: Quota, key: Arc<str>, fraction: f64, hold: Duration) -> Self {
        let interval = quota.interval_nanos();
        let lease = (quota.limit() as f64 * fraction).floor() as u64;
        let lease = lease.min(UNITS / 2);
        let hold = u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX);
        Self {
            quota,
            key,
            interval,
            tolerance: interval.saturating_mul(quota.limit()),
            period: u64::try_from(quota.period().as_nanos()).unwrap_or(u64::MAX),
            lease,
            margin: if lease > 0 { hold } else { 0 },
            hold,
            word: AtomicU64::new(0),
            expires: AtomicU64::new(0),
            tat: AtomicU64::new(0),
        }
    }

    /// Whether `units` can never fit.
    pub(crate) fn never(&self, units: u64) -> bool {
        units.saturating_mul(self.interval) > self.tolerance
    }

    /// Takes `units` from a live lease; the generation taken from, if it had them.
    pub(crate) fn take(&self, units: u64, now: u64) -> Option<u64> {
        if self.lease == 0 || self.expires.load(Ordering::Acquire) <= now {
            return None;
        }
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & UNITS >= units).then(|| word - units)
            })
            .ok()
            .map(|word| word & !UNITS)
    }

    /// Puts back units taken from `generation`; false when that lease is gone (they must go
    /// back to Redis instead).
    pub(crate) fn put_back(&self, units: u64, generation: u64) -> bool {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & !UNITS == generation).then(|| word + units)
            })
            .is_ok()
    }

    /// Empties the lease (a new generation starts); the units it held.
    pub(crate) fn drain(&self) -> u64 {
        let old = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some((word & !UNITS).wrapping_add(GENERATION))
            })
            .unwrap_or_default();
        old & UNITS
    }

    /// Empties the lease if it has expired at `now`; the units it held.
    pub(crate) fn drain_expired(&self, now: u64) -> u64 {
        if self.expires.load(Ordering::Acquire) > now || self.unspent() == 0 {
            return 0;
        }
        self.drain()
    }

    /// Adds units granted at `now` (after a [`drain`](Self::drain)), spendable for `hold`.
    pub(crate) fn grant(&self, units: u64, now: u64) {
        if units > 0 {
            self.expires
                .store(now.saturating_add(self.hold), Ordering::Release);
            self.word.fetch_add(units.min(UNITS / 2), Ordering::AcqRel);
        }
    }

    /// Puts back units [`drain`](Self::drain) took, under their old expiry.
    pub(crate) fn refund(&self, units: u64) {
        self.word.fetch_add(units.min(UNITS / 2), Ordering::AcqRel);
    }

    /// Unspent leased units, whether or not they may still be spent.
    pub(crate) fn unspent(&self) -> u64 {
        self.word.load(Ordering::Acquire) & UNITS
    }

    /// Leased units this process may still spend at `now`.
    pub(crate) fn spendable(&self, now: u64) -> u64 {
        if self.expires.load(Ordering::Acquire) > now {
            self.unspent()
        } else {
            0
        }
    }

    /// Records the TAT Redis reported.
    pub(crate) fn seen(&self, tat: u64) {
        self.tat.store(tat, Ordering::Release);
    }

    /// The TAT Redis last reported, in local nanoseconds (0 before any).
    pub(crate) fn last_tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }

    /// How the cell stands at `now` for this process: what Redis had free at the last
    /// exchange, refilled since, plus the lease it may still spend.
    pub(crate) fn view(&self, now: u64) -> View {
        view(
            self,
            self.tat.load(Ordering::Acquire),
            now,
            self.spendable(now),
        )
    }
}

/// The view of `cell` with its TAT at `tat`, plus `leased` units in hand.
pub(crate) fn view(cell: &Cell, tat: u64, now: u64, leased: u64) -> View {
    let used = tat.max(now) - now;
    let depth = cell.tolerance.saturating_sub(cell.margin);
    let free = depth.saturating_sub(used) / cell.interval;
    View {
        quota: cell.quota,
        remaining: free.saturating_add(leased).min(cell.quota.limit()),
        reset_nanos: used,
    }
}
