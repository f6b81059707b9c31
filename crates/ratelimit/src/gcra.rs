//! The generic cell rate algorithm on one atomic word.
//!
//! A GCRA is a token bucket written as a single number, the theoretical arrival time (TAT): the
//! moment the bucket would be full again. A request of `n` units moves it `n` intervals later;
//! it may go once `TAT − tolerance ≤ now`, where the tolerance is one period's quota. Because
//! the state is one `u64`, a decision is a load, some arithmetic and a compare-exchange — no
//! lock, no allocation — and a request that has to wait is given its own departure time, in
//! arrival order, instead of polling.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::quota::Quota;

/// Why a reservation was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// It would have to wait this many nanoseconds, more than allowed.
    Wait(u64),
    /// It can never fit: its cost exceeds the whole quota.
    Never,
}

/// One limit's state: `tat` in nanoseconds since the limiter's epoch.
///
/// The rate is fixed for a configured quota or one a provider's headers report, and moves for
/// one learned from refusals ([`set_pace`](Self::set_pace)): `interval` and `tolerance` are
/// atomics so that a decision reads them without a lock.
#[derive(Debug)]
pub(crate) struct Gcra {
    tat: AtomicU64,
    /// The quota as reported (for a learned pace, the per-minute figure it amounts to).
    limit: AtomicU64,
    period: Duration,
    /// Nanoseconds per unit.
    interval: AtomicU64,
    /// The bucket depth in nanoseconds: one period's quota, or a learned pace's burst.
    tolerance: AtomicU64,
    /// A learned pace never refuses a request as too large: its true bucket is unknown.
    paced: AtomicBool,
}

/// A limit as it stands at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// The quota.
    pub quota: Quota,
    /// Units that can be taken now without waiting.
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset_nanos: u64,
}

impl Gcra {
    pub(crate) fn new(quota: Quota) -> Self {
        let interval = quota.interval_nanos();
        Self {
            tat: AtomicU64::new(0),
            limit: AtomicU64::new(quota.limit()),
            period: quota.period(),
            interval: AtomicU64::new(interval),
            tolerance: AtomicU64::new(interval.saturating_mul(quota.limit())),
            paced: AtomicBool::new(false),
        }
    }

    /// A pace learned from refusals: one unit every `interval` nanoseconds, `burst` units ahead
    /// of schedule at most.
    pub(crate) fn paced(interval: u64, burst: u64) -> Self {
        let cell = Self {
            tat: AtomicU64::new(0),
            limit: AtomicU64::new(1),
            period: Duration::from_secs(60),
            interval: AtomicU64::new(1),
            tolerance: AtomicU64::new(1),
            paced: AtomicBool::new(true),
        };
        cell.set_pace(interval, burst);
        cell
    }

    /// Moves a learned pace (or replaces a pace by a quota the provider reported).
    pub(crate) fn set_pace(&self, interval: u64, burst: u64) {
        let interval = interval.max(1);
        self.interval.store(interval, Ordering::Release);
        self.tolerance
            .store(interval.saturating_mul(burst.max(1)), Ordering::Release);
        let per_period = (self.period.as_nanos() as u64).div_ceil(interval).max(1);
        self.limit.store(per_period, Ordering::Release);
    }

    /// Replaces a learned pace by a quota the provider reported (of this cell's period).
    pub(crate) fn set_quota(&self, quota: Quota) {
        let interval = quota.interval_nanos();
        self.interval.store(interval, Ordering::Release);
        self.tolerance
            .store(interval.saturating_mul(quota.limit()), Ordering::Release);
        self.limit.store(quota.limit(), Ordering::Release);
        self.paced.store(false, Ordering::Release);
    }

    /// Whether the rate is a pace learned from refusals.
    pub(crate) fn is_paced(&self) -> bool {
        self.paced.load(Ordering::Acquire)
    }

    /// Nanoseconds per unit.
    pub(crate) fn interval(&self) -> u64 {
        self.interval.load(Ordering::Acquire)
    }

    pub(crate) fn quota(&self) -> Quota {
        let limit = NonZeroU64::new(self.limit.load(Ordering::Acquire)).unwrap_or(NonZeroU64::MIN);
        Quota::new(limit, self.period)
    }

    #[inline]
    fn span(&self, units: u64) -> u64 {
        units.saturating_mul(self.interval.load(Ordering::Relaxed))
    }

    #[inline]
    fn tolerance(&self) -> u64 {
        self.tolerance.load(Ordering::Relaxed)
    }

    /// Whether `units` exceed the whole quota: no wait makes them fit. A learned pace says
    /// nothing about the provider's bucket, so it never refuses: a large request waits its
    /// share of time.
    #[inline]
    pub(crate) fn never(&self, units: u64) -> bool {
        self.span(units) > self.tolerance() && !self.is_paced()
    }

    /// Takes `units`, to go at the returned time (`now` or later, in arrival order), unless
    /// that is more than `max_wait` away or can never be.
    #[inline]
    pub(crate) fn reserve(&self, units: u64, now: u64, max_wait: u64) -> Result<u64, Denied> {
        if self.never(units) {
            return Err(Denied::Never);
        }
        let span = self.span(units);
        let tolerance = self.tolerance();
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now).saturating_add(span);
            let departure = next.saturating_sub(tolerance).max(now);
            let wait = departure - now;
            if wait > max_wait {
                return Err(Denied::Wait(wait));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(departure),
                Err(current) => tat = current,
            }
        }
    }

    /// Gives back `units` taken earlier (a reservation that was not used, or the part of an
    /// estimate the answer did not need).
    pub(crate) fn release(&self, units: u64) {
        let span = self.span(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(span))
            });
    }

    /// Takes `units` more, unconditionally (an answer that used more than its estimate).
    pub(crate) fn charge(&self, units: u64) {
        let span = self.span(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_add(span))
            });
    }

    /// Never lets more than `remaining` units be available at `at`: the provider's own count,
    /// which includes traffic this process does not see. Only ever tightens.
    pub(crate) fn tighten(&self, remaining: u64, at: u64) {
        let used = self.tolerance().saturating_sub(self.span(remaining));
        self.tat
            .fetch_max(at.saturating_add(used), Ordering::AcqRel);
    }

    /// Holds everything back until `until`, when `units` are available again (the provider's
    /// `retry-after` for a request of that size).
    pub(crate) fn pause_until(&self, until: u64, units: u64) {
        let empty_then = until
            .saturating_add(self.tolerance())
            .saturating_sub(self.span(units.max(1)));
        self.tat.fetch_max(empty_then, Ordering::AcqRel);
    }

    pub(crate) fn view(&self, now: u64) -> View {
        let tat = self.tat.load(Ordering::Acquire).max(now);
        let used = tat - now;
        View {
            quota: self.quota(),
            remaining: self.tolerance().saturating_sub(used) / self.interval(),
            reset_nanos: used,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn per_minute(limit: u64) -> Gcra {
        Gcra::new(Quota::per_minute(NonZeroU64::new(limit).unwrap()))
    }

    #[test]
    fn a_full_bucket_then_one_per_interval() {
        let g = per_minute(60);
        for _ in 0..60 {
            assert_eq!(g.reserve(1, 0, 0), Ok(0));
        }
        assert_eq!(g.reserve(1, 0, 0), Err(Denied::Wait(SECOND)));
        assert_eq!(
            g.reserve(1, 0, 2 * SECOND),
            Ok(SECOND),
            "queued: goes in a second"
        );
        assert_eq!(
            g.reserve(1, 0, 2 * SECOND),
            Ok(2 * SECOND),
            "then the next, in order"
        );
        assert_eq!(g.view(0).remaining, 0);
        assert_eq!(g.view(2 * SECOND).remaining, 0);
        assert_eq!(g.view(3 * SECOND).remaining, 1);
    }

    #[test]
    fn costs_release_charge() {
        let g = per_minute(6_000);
        assert_eq!(g.reserve(4_000, 0, 0), Ok(0));
        assert_eq!(g.reserve(4_000, 0, 0), Err(Denied::Wait(20 * SECOND)));
        g.release(3_000);
        assert_eq!(g.view(0).remaining, 5_000);
        g.charge(1_000);
        assert_eq!(g.view(0).remaining, 4_000);
        assert_eq!(g.reserve(6_001, 0, u64::MAX), Err(Denied::Never));
        assert_eq!(
            g.reserve(6_000, 0, u64::MAX),
            Ok(20 * SECOND),
            "the whole quota fits, later"
        );
    }

    #[test]
    fn provider_counts_only_tighten() {
        let g = per_minute(600);
        g.tighten(100, 0);
        assert_eq!(g.view(0).remaining, 100);
        g.tighten(500, 0);
        assert_eq!(g.view(0).remaining, 100, "a looser count never loosens");
        // A count taken 10 s ago has refilled since.
        let g = per_minute(600);
        g.tighten(0, 0);
        assert_eq!(g.view(10 * SECOND).remaining, 100);
    }

    #[test]
    fn a_pause_holds_everyone_then_releases_one_request() {
        let g = per_minute(60);
        g.pause_until(5 * SECOND, 1);
        assert_eq!(g.reserve(1, 0, u64::MAX), Ok(5 * SECOND));
        assert_eq!(
            g.reserve(1, 0, u64::MAX),
            Ok(6 * SECOND),
            "spaced after the pause, no burst"
        );
    }

    proptest! {
        /// Whatever the arrivals, waits and costs, the departures never put more than
        /// `limit + limit × w / period` units in any interval of length `w`.
        #[test]
        fn departures_never_exceed_the_quota(
            arrivals in prop::collection::vec((0u64..2_000, 1u64..50, any::<bool>()), 1..200),
        ) {
            let limit = 100;
            let g = per_minute(limit);
            let period = 60 * SECOND;
            let mut now = 0;
            let mut departures: Vec<(u64, u64)> = Vec::new();
            for (gap_ms, cost, patient) in arrivals {
                now += gap_ms * 1_000_000;
                let max_wait = if patient { 30 * SECOND } else { 0 };
                if let Ok(at) = g.reserve(cost, now, max_wait) {
                    prop_assert!(at >= now && at - now <= max_wait);
                    departures.push((at, cost));
                }
            }
            departures.sort_unstable();
            for i in 0..departures.len() {
                let mut total = 0;
                for &(at, cost) in &departures[i..] {
                    total += cost;
                    let window = at - departures[i].0;
                    let allowed = limit as f64 + limit as f64 * window as f64 / period as f64;
                    prop_assert!(total as f64 <= allowed + 1e-9, "{total} units in {window} ns");
                }
            }
        }
    }
}
