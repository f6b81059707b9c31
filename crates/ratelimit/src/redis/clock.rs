//! The time the scripts run at: the wall clock, as tokio's clock sees it.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Maps tokio's clock to the wall clock: `wall_at_start + (now − instant_at_start)`, with one
/// start per process, so every store of a process agrees (all on one paused clock in tests)
/// and machines agree within their NTP skew. Redis `TIME` is not used: it would not follow a
/// paused clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// This store's start, for the local atomics.
    start: Instant,
    /// The process's anchor: an instant and the wall-clock nanoseconds then.
    anchor: (std::time::Instant, i128),
}

static ANCHOR: OnceLock<(std::time::Instant, i128)> = OnceLock::new();

impl Clock {
    pub(crate) fn new() -> Self {
        let anchor = *ANCHOR.get_or_init(|| {
            let wall = SystemTime::now().duration_since(UNIX_EPOCH);
            (
                std::time::Instant::now(),
                wall.map_or(0, |since| since.as_nanos() as i128),
            )
        });
        Self {
            start: Instant::now(),
            anchor,
        }
    }

    /// Nanoseconds since this store's start, for the local atomics.
    pub(crate) fn local(&self, at: Instant) -> u64 {
        crate::memory::nanos_since(self.start, at)
    }

    /// The instant `nanos` after this store's start.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.start + Duration::from_nanos(nanos)
    }

    /// The frame of one script call made at `now`.
    pub(crate) fn frame(&self, now: Instant) -> Frame {
        let (anchor, wall) = self.anchor;
        let now_std = now.into_std();
        let elapsed = match now_std.checked_duration_since(anchor) {
            Some(after) => after.as_nanos() as i128,
            None => -(anchor.duration_since(now_std).as_nanos() as i128),
        };
        let wall = (wall + elapsed).max(0);
        Frame {
            now,
            second: u64::try_from(wall / 1_000_000_000).unwrap_or(u64::MAX),
            nanos: (wall % 1_000_000_000) as i64,
        }
    }
}

/// One call's time: whole seconds since the UNIX epoch and the nanoseconds within.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub(crate) now: Instant,
    pub(crate) second: u64,
    pub(crate) nanos: i64,
}

impl Frame {
    /// `at` in the script's terms: nanoseconds since the frame's second.
    pub(crate) fn offset(&self, at: Instant) -> i64 {
        let delta = if at >= self.now {
            i64::try_from((at - self.now).as_nanos()).unwrap_or(i64::MAX)
        } else {
            -i64::try_from((self.now - at).as_nanos()).unwrap_or(i64::MAX)
        };
        self.nanos.saturating_add(delta)
    }

    /// The instant `relative` nanoseconds after the frame's `now` (before it when negative).
    pub(crate) fn instant(&self, relative: i64) -> Instant {
        let magnitude = Duration::from_nanos(relative.unsigned_abs());
        if relative >= 0 {
            self.now + magnitude
        } else {
            self.now.checked_sub(magnitude).unwrap_or(self.now)
        }
    }
}
