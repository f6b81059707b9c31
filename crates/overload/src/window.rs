//! A sliding window of one-second buckets with running totals.

use std::ops::{AddAssign, SubAssign};
use std::time::Duration;

use tokio::time::Instant;

/// Counters kept per bucket and summed over the window.
pub(crate) trait Counts: Copy + Default + AddAssign + SubAssign {}

impl<C: Copy + Default + AddAssign + SubAssign> Counts for C {}

/// The last `len` seconds of counts, in one-second buckets; what is older falls out.
#[derive(Debug)]
pub(crate) struct Window<C> {
    epoch: Instant,
    /// (second since `epoch`, counts) per slot.
    buckets: Box<[(u64, C)]>,
    total: C,
    /// The newest second seen.
    now: u64,
}

impl<C: Counts> Window<C> {
    /// A window of `span` (rounded up to whole seconds, at least one).
    pub(crate) fn new(span: Duration, epoch: Instant) -> Self {
        let len = span.as_secs() + u64::from(span.subsec_nanos() > 0);
        Self {
            epoch,
            buckets: vec![(0, C::default()); len.max(1) as usize].into_boxed_slice(),
            total: C::default(),
            now: 0,
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// Moves the window to `now`, dropping the buckets that fell out of it.
    fn advance(&mut self, now: Instant) -> usize {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        if second > self.now {
            // Clear every slot between the last second seen and this one (at most all).
            let stale = (second - self.now).min(self.len());
            for s in second + 1 - stale..=second {
                let slot = (s % self.len()) as usize;
                let (_, counts) = std::mem::take(&mut self.buckets[slot]);
                self.total -= counts;
                self.buckets[slot].0 = s;
            }
            self.now = second;
        }
        (self.now % self.len()) as usize
    }

    /// Adds `counts` at `now` (a time before the newest seen counts in the newest bucket).
    pub(crate) fn add(&mut self, now: Instant, counts: C) {
        let slot = self.advance(now);
        self.buckets[slot].1 += counts;
        self.total += counts;
    }

    /// The sums over the window ending at `now`.
    pub(crate) fn total(&mut self, now: Instant) -> C {
        self.advance(now);
        self.total
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    struct N(u64);
    impl AddAssign for N {
        fn add_assign(&mut self, o: Self) {
            self.0 += o.0;
        }
    }
    impl SubAssign for N {
        fn sub_assign(&mut self, o: Self) {
            self.0 -= o.0;
        }
    }

    proptest! {
        /// The running total is always the sum of the additions made in the last `len` seconds.
        #[test]
        fn total_is_the_sum_of_the_last_seconds(
            len in 1u64..8,
            steps in proptest::collection::vec((0u64..3_000, 1u64..5), 1..60),
        ) {
            let epoch = Instant::now();
            let mut window = Window::<N>::new(Duration::from_secs(len), epoch);
            let mut added = Vec::new();
            let mut at = 0u64;
            for (gap_ms, n) in steps {
                at += gap_ms;
                let now = epoch + Duration::from_millis(at);
                window.add(now, N(n));
                added.push((at / 1000, n));
                let second = at / 1000;
                let expected: u64 = added
                    .iter()
                    .filter(|(s, _)| s + len > second)
                    .map(|(_, n)| n)
                    .sum();
                prop_assert_eq!(window.total(now).0, expected);
            }
        }
    }
}
