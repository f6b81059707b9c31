//! The leaky bucket, as the generic cell rate algorithm (GCRA): one theoretical arrival time.

use std::time::Duration;

use tokio::time::Instant;

use super::MeterView;

/// A minute in nanoseconds: one unit's share of the schedule, in ticks.
const MINUTE_NANOS: u128 = 60_000_000_000;

/// Spaces admissions at `per_minute` units a minute and lets a key run `burst` units ahead of
/// schedule; without a burst, one request's worth (any request up to the ceiling is admitted
/// once the previous ones have drained, and pushes the schedule by its size).
///
/// Time is counted in ticks of 1/`per_minute` ns since `epoch`, so that one unit is exactly
/// [`MINUTE_NANOS`] ticks and every wait is exact to the nanosecond, whatever the rate.
#[derive(Clone, Debug)]
pub(super) struct LeakyBucket {
    per_minute: u64,
    burst: Option<u64>,
    epoch: Instant,
    /// The theoretical arrival time: when everything admitted so far has drained, in ticks.
    tat: u128,
}

impl LeakyBucket {
    /// An idle bucket leaking `per_minute` units a minute.
    pub(super) fn new(per_minute: u64, burst: Option<u64>, now: Instant) -> Self {
        Self {
            per_minute,
            burst,
            epoch: now,
            tat: 0,
        }
    }

    fn ticks(&self, now: Instant) -> u128 {
        now.saturating_duration_since(self.epoch).as_nanos() * u128::from(self.per_minute)
    }

    /// `ticks` as a duration, rounded up to the nanosecond.
    fn duration(&self, ticks: u128) -> Duration {
        let nanos = ticks.div_ceil(u128::from(self.per_minute));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    pub(super) fn ceiling(&self) -> u64 {
        self.burst.unwrap_or(self.per_minute)
    }

    /// `amount` fits when, after it, the schedule ends at most `burst` units after `now`.
    pub(super) fn wait_for(&mut self, amount: u64, now: Instant) -> Option<Duration> {
        let burst = self.burst.unwrap_or(amount);
        if amount > burst {
            return Some(Duration::MAX);
        }
        let now = self.ticks(now);
        let end = self.tat.max(now) + u128::from(amount) * MINUTE_NANOS;
        let allowed = now + u128::from(burst) * MINUTE_NANOS;
        (end > allowed).then(|| self.duration(end - allowed))
    }

    pub(super) fn take(&mut self, amount: u64, now: Instant) {
        self.tat = self.tat.max(self.ticks(now)) + u128::from(amount) * MINUTE_NANOS;
    }

    /// Moves the schedule back by `amount`: as if the request had taken that much less.
    pub(super) fn give_back(&mut self, amount: u64) {
        self.tat = self.tat.saturating_sub(u128::from(amount) * MINUTE_NANOS);
    }

    /// Remaining: the units that fit now (without a burst, the ceiling once the schedule has
    /// caught up, else nothing); reset: until the schedule has caught up.
    pub(super) fn view(&mut self, limit: u64, now: Instant) -> MeterView {
        let ahead = self.tat.saturating_sub(self.ticks(now));
        let remaining = match self.burst {
            Some(burst) => (u128::from(burst) * MINUTE_NANOS).saturating_sub(ahead) / MINUTE_NANOS,
            None if ahead == 0 => u128::from(self.per_minute),
            None => 0,
        };
        MeterView {
            limit,
            remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
            reset: self.duration(ahead),
        }
    }
}
