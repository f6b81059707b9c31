//! Sliding windows of recent calls, on atomics: recording a call never takes a lock.
//!
//! Counts are exact for one thread and approximately consistent under contention (a reader
//! may see one call's slot updated before its aggregate): a breaker's thresholds do not need
//! more.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::config::Window;

/// What a window holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls recorded.
    pub calls: u32,
    /// Of which failures.
    pub failures: u32,
    /// Of which slow.
    pub slow: u32,
}

impl WindowCounts {
    /// The share of calls that failed.
    pub fn failure_rate(&self) -> f64 {
        f64::from(self.failures) / f64::from(self.calls.max(1))
    }

    /// The share of calls that were slow.
    pub fn slow_rate(&self) -> f64 {
        f64::from(self.slow) / f64::from(self.calls.max(1))
    }
}

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

fn bits(failed: bool, slow: bool) -> u8 {
    RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 }
}

/// The last `n` calls: a ring of slots plus running totals.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU32,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    fn record(&self, failed: bool, slow: bool) {
        // Wrapping at u32::MAX skips a few slots once in four billion calls: harmless.
        let index = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.slots.len();
        let new = bits(failed, slow);
        let old = self.slots[index].swap(new, Ordering::AcqRel);
        if old & RECORDED == 0 {
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        adjust(&self.failures, old & FAILED != 0, failed);
        adjust(&self.slow, old & SLOW != 0, slow);
    }

    fn counts(&self) -> WindowCounts {
        WindowCounts {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
        }
    }

    fn clear(&self) {
        for slot in &self.slots {
            slot.store(0, Ordering::Relaxed);
        }
        self.calls.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.slow.store(0, Ordering::Relaxed);
    }
}

/// Moves a running total from a slot's old value to its new one.
fn adjust(total: &AtomicU32, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            total.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            total.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// One second of a time window.
#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// The calls of the last `n` whole seconds, one bucket a second.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
}

impl TimeWindow {
    fn new(seconds: u32) -> Self {
        Self {
            buckets: (0..seconds).map(|_| Bucket::default()).collect(),
        }
    }

    fn record(&self, second: u64, failed: bool, slow: bool) {
        // Seconds count from 1 so that an untouched bucket (second 0) is never current.
        let second = second + 1;
        let bucket = &self.buckets[(second % self.buckets.len() as u64) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second
            && bucket
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.calls.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
            bucket.slow.store(0, Ordering::Relaxed);
        }
        bucket.calls.fetch_add(1, Ordering::Relaxed);
        bucket
            .failures
            .fetch_add(u32::from(failed), Ordering::Relaxed);
        bucket.slow.fetch_add(u32::from(slow), Ordering::Relaxed);
    }

    fn counts(&self, second: u64) -> WindowCounts {
        let second = second + 1;
        let oldest = second.saturating_sub(self.buckets.len() as u64 - 1);
        let mut counts = WindowCounts::default();
        for bucket in &self.buckets {
            let at = bucket.second.load(Ordering::Acquire);
            if at >= oldest && at <= second {
                counts.calls += bucket.calls.load(Ordering::Relaxed);
                counts.failures += bucket.failures.load(Ordering::Relaxed);
                counts.slow += bucket.slow.load(Ordering::Relaxed);
            }
        }
        counts
    }

    fn clear(&self) {
        for bucket in &self.buckets {
            bucket.second.store(0, Ordering::Relaxed);
        }
    }
}

/// Either kind of window.
#[derive(Debug)]
pub(crate) enum Calls {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Calls {
    pub(crate) fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => Self::Count(CountWindow::new(n)),
            Window::Time(seconds) => Self::Time(TimeWindow::new(seconds)),
        }
    }

    pub(crate) fn record(&self, second: u64, failed: bool, slow: bool) {
        match self {
            Self::Count(w) => w.record(failed, slow),
            Self::Time(w) => w.record(second, failed, slow),
        }
    }

    pub(crate) fn counts(&self, second: u64) -> WindowCounts {
        match self {
            Self::Count(w) => w.counts(),
            Self::Time(w) => w.counts(second),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Self::Count(w) => w.clear(),
            Self::Time(w) => w.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_count_window_forgets_the_oldest() {
        let w = Calls::new(Window::Count(4));
        for failed in [true, true, false, false] {
            w.record(0, failed, false);
        }
        assert_eq!(
            w.counts(0),
            WindowCounts {
                calls: 4,
                failures: 2,
                slow: 0
            }
        );
        w.record(0, false, true);
        w.record(0, false, false);
        assert_eq!(
            w.counts(0),
            WindowCounts {
                calls: 4,
                failures: 0,
                slow: 1
            }
        );
        w.clear();
        assert_eq!(w.counts(0), WindowCounts::default());
    }

    #[test]
    fn a_time_window_forgets_old_seconds() {
        let w = Calls::new(Window::Time(3));
        w.record(10, true, false);
        w.record(11, false, false);
        w.record(12, false, true);
        assert_eq!(
            w.counts(12),
            WindowCounts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(
            w.counts(13),
            WindowCounts {
                calls: 2,
                failures: 0,
                slow: 1
            }
        );
        w.record(14, true, false);
        assert_eq!(
            w.counts(14),
            WindowCounts {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.counts(20), WindowCounts::default());
    }

    proptest! {
        /// On one thread, a count window always holds exactly the last `n` calls.
        #[test]
        fn a_count_window_is_the_last_n_calls(size in 1u32..16, calls in prop::collection::vec((any::<bool>(), any::<bool>()), 0..64)) {
            let w = Calls::new(Window::Count(size));
            for (failed, slow) in &calls {
                w.record(0, *failed, *slow);
            }
            let last = &calls[calls.len().saturating_sub(size as usize)..];
            let want = WindowCounts {
                calls: last.len() as u32,
                failures: last.iter().filter(|c| c.0).count() as u32,
                slow: last.iter().filter(|c| c.1).count() as u32,
            };
            prop_assert_eq!(w.counts(0), want);
        }
    }
}
