//! What an upstream admitted lately: the requests and tokens it answered, counted in 100 ms
//! slots over the last second and in 1 s slots over the last minute.
//!
//! A limit learned from a refusal is the rate the upstream actually admitted before it: how
//! many answers came back in the window the limit counts over. Two rings of fixed size keep
//! that for any window from 100 ms to a minute in under 2 KB a scope, without a lock: each slot
//! is stamped with the slot of time it counts, and a slot whose stamp is stale is cleared when
//! next written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::quota::Dimension;
use crate::store::Charges;

const FINE_NANOS: u64 = 100_000_000;
const FINE_SLOTS: usize = 10;
const COARSE_NANOS: u64 = 1_000_000_000;
const COARSE_SLOTS: usize = 60;

/// The longest window counted.
pub(crate) const LONGEST: Duration = Duration::from_secs(COARSE_SLOTS as u64);

/// One slot: the slot of time it counts (+1; 0 is empty), and units per per-minute dimension.
#[derive(Debug, Default)]
struct Slot {
    stamp: AtomicU64,
    units: [AtomicU64; 4],
}

impl Slot {
    fn add(&self, stamp: u64, charges: Charges) {
        let seen = self.stamp.load(Ordering::Acquire);
        if seen != stamp
            && self
                .stamp
                .compare_exchange(seen, stamp, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This writer moved the slot to its new time: it starts from nothing. A concurrent
            // add to the old time may land here too; the counts are estimates.
            for unit in &self.units {
                unit.store(0, Ordering::Relaxed);
            }
        }
        for (i, unit) in self.units.iter().enumerate() {
            unit.fetch_add(charges.0[i], Ordering::Relaxed);
        }
    }

    fn get(&self, dimension: Dimension, oldest: u64, newest: u64) -> u64 {
        let stamp = self.stamp.load(Ordering::Acquire);
        if (oldest..=newest).contains(&stamp) {
            self.units[dimension.index()].load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

/// Answers per slot of time, over the last minute.
#[derive(Debug)]
pub(crate) struct Admitted {
    fine: [Slot; FINE_SLOTS],
    coarse: [Slot; COARSE_SLOTS],
    /// When the first answer was counted (+1; 0 is never).
    first: AtomicU64,
}

impl Default for Admitted {
    fn default() -> Self {
        Self {
            fine: std::array::from_fn(|_| Slot::default()),
            coarse: std::array::from_fn(|_| Slot::default()),
            first: AtomicU64::new(0),
        }
    }
}

impl Admitted {
    /// Counts an answer of `charges` at `now` (nanoseconds since the store's epoch).
    pub(crate) fn add(&self, now: u64, charges: Charges) {
        let _ = self
            .first
            .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Acquire);
        let fine = now / FINE_NANOS;
        self.fine[fine as usize % FINE_SLOTS].add(fine + 1, charges);
        let coarse = now / COARSE_NANOS;
        self.coarse[coarse as usize % COARSE_SLOTS].add(coarse + 1, charges);
    }

    /// How long answers have been counted, at `now`.
    pub(crate) fn history(&self, now: u64) -> Duration {
        match self.first.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            first => Duration::from_nanos(now.saturating_sub(first - 1)),
        }
    }

    /// The units of `dimension` answered in the `window` before `now` (to the slot: up to one
    /// slot more than the window, the one `now` is in).
    pub(crate) fn count(&self, dimension: Dimension, window: Duration, now: u64) -> u64 {
        let window = window.min(LONGEST);
        let (slots, width) = if window <= Duration::from_secs(1) {
            (&self.fine[..], FINE_NANOS)
        } else {
            (&self.coarse[..], COARSE_NANOS)
        };
        let newest = now / width + 1;
        let span = (window.as_nanos() as u64).div_ceil(width).max(1);
        let oldest = newest.saturating_sub(span - 1).max(1);
        slots.iter().map(|s| s.get(dimension, oldest, newest)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    #[test]
    fn counts_what_was_answered_in_a_trailing_window() {
        let admitted = Admitted::default();
        let one = Charges::request(10, 5);
        // One answer every 50 ms for 90 s.
        for i in 0..1_800 {
            admitted.add(i * 50 * MS, one);
        }
        let now = 1_799 * 50 * MS;
        assert_eq!(admitted.history(now), Duration::from_nanos(now));
        let second = admitted.count(Dimension::Requests, Duration::from_secs(1), now);
        assert_eq!(second, 20, "ten 100 ms slots of two");
        let ten = admitted.count(Dimension::Requests, Duration::from_secs(10), now);
        assert_eq!(ten, 200);
        let minute = admitted.count(Dimension::Requests, Duration::from_secs(60), now);
        assert_eq!(minute, 1_200, "older answers are forgotten");
        assert_eq!(
            admitted.count(Dimension::Tokens, Duration::from_secs(60), now),
            1_200 * 15
        );
        assert_eq!(
            admitted.count(Dimension::InputTokens, Duration::from_secs(1), now),
            200
        );
    }

    #[test]
    fn stale_slots_count_nothing() {
        let admitted = Admitted::default();
        admitted.add(0, Charges::request(1, 1));
        let later = 120 * S;
        assert_eq!(
            admitted.count(Dimension::Requests, Duration::from_secs(60), later),
            0
        );
        assert_eq!(
            admitted.count(Dimension::Requests, Duration::from_secs(1), later),
            0
        );
        // The slot is reused for its new time, starting from nothing.
        admitted.add(later, Charges::request(1, 1));
        assert_eq!(
            admitted.count(Dimension::Requests, Duration::from_secs(60), later),
            1
        );
    }
}
