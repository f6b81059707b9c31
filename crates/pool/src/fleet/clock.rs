//! The fleet's time: wall-clock microseconds since the Unix epoch, read once per pool and then
//! advanced by tokio's clock, so that processes agree within their clocks' skew and tests with
//! a paused clock see cooldowns end in paused time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The furthest ahead a time is taken to be (ten years).
const FAR: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Converts between this process's instants and the fleet's wall-clock microseconds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    anchor: Instant,
    anchor_wall: u64,
}

impl Clock {
    pub(super) fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            anchor: Instant::now(),
            anchor_wall: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// `at` in the fleet's microseconds (rounded down).
    pub(super) fn wall(&self, at: Instant) -> u64 {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if at >= self.anchor {
            self.anchor_wall.saturating_add(micros(at - self.anchor))
        } else {
            self.anchor_wall.saturating_sub(micros(self.anchor - at))
        }
    }

    /// The fleet's `micros` as an instant of this process (never later than the instant it
    /// was read from, in the process that wrote it).
    pub(super) fn local(&self, micros: u64) -> Instant {
        if micros >= self.anchor_wall {
            // A garbled time far ahead stays a time a `u64` of nanoseconds can add.
            let ahead = Duration::from_micros(micros - self.anchor_wall).min(FAR);
            self.anchor + ahead
        } else {
            let behind = Duration::from_micros(self.anchor_wall - micros);
            self.anchor.checked_sub(behind).unwrap_or(self.anchor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_instant_survives_the_round_trip_without_growing() {
        let clock = Clock::new();
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_nanos(1_234_567),
            now + Duration::from_secs(3600),
        ] {
            let back = clock.local(clock.wall(at));
            assert!(back <= at && at - back < Duration::from_micros(1), "{at:?}");
        }
        assert_eq!(
            clock.wall(now) - clock.wall(now - Duration::from_secs(2)),
            2_000_000
        );
    }
}
