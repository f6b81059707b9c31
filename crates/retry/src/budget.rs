//! A retry budget: retries may add at most a set share of load, however bad the outage.
//!
//! # Why budgets and not only max attempts?
//!
//! Five attempts per request is fine when one request in a hundred fails; when the upstream is
//! down, it multiplies the load on it by five exactly when it can least take it. A budget ties
//! retries to successes of the recent past, as Finagle's and gRPC's do: every new request
//! deposits `ratio` of a retry, every retry withdraws one, so under a full outage the upstream
//! sees at most `requests × (1 + ratio)` calls, plus a small floor of retries per second that
//! lets a quiet client still retry at all.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::time::Instant;

/// Thousandths of a retry.
const ONE: i64 = 1_000;

/// A token bucket of retries shared by every clone of a [`RetryLayer`](crate::RetryLayer).
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry available.
    balance: AtomicI64,
    deposit: i64,
    cap: i64,
    /// The floor: a GCRA allowing `min_per_second` retries a second regardless of the balance.
    floor_interval: u64,
    floor_tat: AtomicU64,
    epoch: Instant,
}

impl RetryBudget {
    /// Each request buys `ratio` of a retry (0.2: retries add at most 20 % of load); at most
    /// `cap` retries are banked; `min_per_second` retries a second are always allowed.
    ///
    /// # Panics
    ///
    /// When `ratio` is negative or not finite.
    pub fn new(ratio: f64, cap: u32, min_per_second: u32) -> Self {
        assert!(
            ratio >= 0.0 && ratio.is_finite(),
            "a retry ratio must be a finite share >= 0"
        );
        Self {
            balance: AtomicI64::new(0),
            // Rounded down: the budget never allows more than the ratio.
            deposit: (ratio * ONE as f64).floor() as i64,
            cap: i64::from(cap) * ONE,
            floor_interval: if min_per_second == 0 {
                0
            } else {
                1_000_000_000 / u64::from(min_per_second)
            },
            floor_tat: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The ratio as a share.
    pub fn ratio(&self) -> f64 {
        self.deposit as f64 / ONE as f64
    }

    /// A new request arrived: bank its share of a retry.
    pub fn deposit(&self) {
        let (deposit, cap) = (self.deposit, self.cap);
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some((b + deposit).min(cap))
            });
    }

    /// Takes one retry, if the balance or the floor allows it.
    pub fn withdraw(&self, now: Instant) -> bool {
        let from_balance = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= ONE).then_some(b - ONE)
            })
            .is_ok();
        from_balance || self.take_from_floor(now)
    }

    fn take_from_floor(&self, now: Instant) -> bool {
        if self.floor_interval == 0 {
            return false;
        }
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        // A one-second burst of the floor, refilled continuously.
        let tolerance = 1_000_000_000;
        self.floor_tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                let next = tat.max(now) + self.floor_interval;
                (next <= now + tolerance).then_some(next)
            })
            .is_ok()
    }

    /// The retries banked now.
    pub fn balance(&self) -> f64 {
        self.balance.load(Ordering::Acquire) as f64 / ONE as f64
    }
}

impl Default for RetryBudget {
    /// 20 % of load, at most 100 retries banked, 10 a second always (Finagle's defaults).
    fn default() -> Self {
        Self::new(0.2, 100, 10)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn retries_follow_the_ratio() {
        let budget = RetryBudget::new(0.5, 100, 0);
        let now = Instant::now();
        assert!(!budget.withdraw(now), "nothing banked yet");
        budget.deposit();
        assert!(!budget.withdraw(now), "half a retry is not a retry");
        budget.deposit();
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
    }

    #[test]
    fn the_floor_allows_a_few_a_second() {
        let budget = RetryBudget::new(0.0, 100, 10);
        let now = Instant::now();
        let granted = (0..100).filter(|_| budget.withdraw(now)).count();
        assert_eq!(granted, 10, "a second's worth at once");
        assert!(
            budget.withdraw(now + Duration::from_millis(100)),
            "then one per 100 ms"
        );
    }

    proptest! {
        /// Tower bug #857 let a 0.6 ratio allow 100 % retries: here, under a 100 % failure
        /// upstream, retries never exceed `ratio × requests` (the floor off).
        #[test]
        fn retries_never_exceed_the_ratio(ratio in 0.0f64..2.0, requests in 1u32..2_000) {
            let budget = RetryBudget::new(ratio, u32::MAX / 1_000, 0);
            let now = Instant::now();
            let mut retries = 0u64;
            for _ in 0..requests {
                budget.deposit();
                // Each request keeps retrying as long as the budget lets it.
                while budget.withdraw(now) {
                    retries += 1;
                }
            }
            prop_assert!(retries as f64 <= ratio * f64::from(requests) + 1e-6, "{retries} retries");
        }
    }
}
