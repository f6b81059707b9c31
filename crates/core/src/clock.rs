//! Time, injectable: every decision reads the clock through [`Clock`].
//!
//! The default [`TokioClock`] reads `tokio::time::Instant`, so tests pause and advance time
//! with `#[tokio::test(start_paused = true)]`. Wall-clock time is needed only to turn an
//! absolute timestamp from a provider (an RFC 3339 reset, an HTTP-date `retry-after`) into a
//! wait, and only when the response has no `date` header to compare against.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A source of monotonic and wall-clock time.
pub trait Clock: Clone + Send + Sync + 'static {
    /// The current monotonic time.
    fn now(&self) -> Instant;

    /// The current wall-clock time, used only to read providers' absolute timestamps.
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The default clock: `tokio::time::Instant::now()` (pausable in tests) and the system time.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for benchmarks and tests outside a tokio runtime.
///
/// # Clone
///
/// Clones share the same time.
#[derive(Clone)]
pub struct ManualClock {
    base: Instant,
    base_wall: SystemTime,
    elapsed_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock starting at `Instant::now()` and the given wall-clock time.
    pub fn new(wall: SystemTime) -> Self {
        Self {
            base: Instant::now(),
            base_wall: wall,
            elapsed_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Relaxed))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(SystemTime::UNIX_EPOCH)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    fn wall(&self) -> SystemTime {
        self.base_wall + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_both_times_together() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let (t0, w0) = (clock.now(), clock.wall());
        clock.clone().advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
        assert_eq!(
            clock.wall().duration_since(w0).unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let t0 = TokioClock.now();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(TokioClock.now() - t0, Duration::from_secs(60));
    }
}
