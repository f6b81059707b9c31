//! The token bucket: holds up to a capacity, refilled continuously at a fixed rate.

use std::time::Duration;

use tokio::time::Instant;

use super::MeterView;

/// Holds up to a capacity, refilled at `refill` units per period. OpenAI and Anthropic count
/// this way with a capacity of a minute's quota; a smaller capacity is the classic token bucket
/// with a small burst.
///
/// The level is counted in ticks: a unit is one period in nanoseconds, and each nanosecond adds
/// `refill` ticks. Integers, so that a client that waits exactly as long as it is told finds
/// exactly what it needs, never a rounding error short of it.
#[derive(Clone, Debug)]
pub(super) struct Bucket {
    /// Ticks per unit: the period in nanoseconds.
    unit: u128,
    /// Ticks added per nanosecond: the units refilled per period.
    refill: u128,
    capacity: u128,
    level: u128,
    updated: Instant,
}

impl Bucket {
    /// A full bucket of `capacity`, refilled at `refill` per `period`.
    pub(super) fn new(capacity: u64, refill: u64, period: Duration, now: Instant) -> Self {
        let unit = period.as_nanos();
        Self {
            unit,
            refill: u128::from(refill),
            capacity: u128::from(capacity) * unit,
            level: u128::from(capacity) * unit,
            updated: now,
        }
    }

    fn refresh(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        self.level = (self.level + elapsed * self.refill).min(self.capacity);
        self.updated = now;
    }

    /// How long `ticks` take to refill, rounded up to the nanosecond.
    fn refill_time(&self, ticks: u128) -> Duration {
        let nanos = ticks.div_ceil(self.refill);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    pub(super) fn ceiling(&self) -> u64 {
        u64::try_from(self.capacity / self.unit).unwrap_or(u64::MAX)
    }

    pub(super) fn wait_for(&mut self, amount: u64, now: Instant) -> Option<Duration> {
        self.refresh(now);
        let needed = u128::from(amount) * self.unit;
        (needed > self.level).then(|| self.refill_time(needed - self.level))
    }

    pub(super) fn take(&mut self, amount: u64) {
        self.level = self.level.saturating_sub(u128::from(amount) * self.unit);
    }

    pub(super) fn give_back(&mut self, amount: u64, now: Instant) {
        self.refresh(now);
        self.level = (self.level + u128::from(amount) * self.unit).min(self.capacity);
    }

    pub(super) fn view(&mut self, limit: u64, now: Instant) -> MeterView {
        self.refresh(now);
        MeterView {
            limit,
            remaining: u64::try_from(self.level / self.unit).unwrap_or(u64::MAX),
            reset: self.refill_time(self.capacity - self.level),
        }
    }
}
