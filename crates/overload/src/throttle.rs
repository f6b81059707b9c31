//! Client-side adaptive throttling, as in Google's SRE book ("Handling Overload").
//!
//! Over a sliding window each scope counts `requests` (every attempt, those rejected here
//! included) and `accepts` (the calls the upstream did not refuse for overload). A new request
//! is rejected locally with probability
//!
//! ```text
//! p = max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! With `K = 2` the upstream still sees up to twice what it accepts, enough to notice when it
//! recovers. Batch requests use a smaller `K` while the scope is not Normal, so they are shed
//! first.

use std::ops::{AddAssign, SubAssign};
use std::time::Duration;

use tokio::time::Instant;

use crate::detector::OverloadState;
use crate::window::Window;

/// The throttle's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleConfig {
    /// The window requests and accepts are counted over (default 2 min, as in the SRE book).
    pub window: Duration,
    /// The multiplier for interactive requests (default 2).
    pub k: f64,
    /// The multiplier for batch requests while the scope is Warning, Critical or Recovering
    /// (default 1: batch work is sent only as fast as it is accepted). In Normal, batch uses `k`.
    pub k_batch: f64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(120),
            k: 2.0,
            k_batch: 1.0,
        }
    }
}

impl ThrottleConfig {
    /// Checks `k` and `k_batch` are at least 1 (below 1 the throttle rejects work the
    /// upstream would accept) and `k_batch` does not exceed `k`.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.k >= 1.0 && self.k_batch >= 1.0 && self.k_batch <= self.k) {
            return Err("throttle multipliers must satisfy 1 <= k_batch <= k".into());
        }
        if self.window.is_zero() {
            return Err("the throttle window must be positive".into());
        }
        Ok(())
    }
}

/// Google SRE's client-side rejection probability.
pub fn rejection_probability(requests: f64, accepts: f64, k: f64) -> f64 {
    ((requests - k * accepts) / (requests + 1.0)).max(0.0)
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    requests: u64,
    accepts: u64,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.accepts += o.accepts;
    }
}

impl SubAssign for Counts {
    fn sub_assign(&mut self, o: Self) {
        self.requests -= o.requests;
        self.accepts -= o.accepts;
    }
}

/// The counts of one scope; the probabilities are recomputed on every change.
#[derive(Debug)]
pub(crate) struct Throttle {
    config: ThrottleConfig,
    window: Window<Counts>,
}

/// Rejection probabilities per priority.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Probabilities {
    pub(crate) interactive: f64,
    pub(crate) batch: f64,
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig, epoch: Instant) -> Self {
        Self {
            window: Window::new(config.window, epoch),
            config,
        }
    }

    /// Counts one request: sent and `accepted` or not, or rejected here (not accepted).
    pub(crate) fn record(&mut self, accepted: bool, now: Instant) {
        self.window.add(
            now,
            Counts {
                requests: 1,
                accepts: u64::from(accepted),
            },
        );
    }

    pub(crate) fn probabilities(&mut self, state: OverloadState, now: Instant) -> Probabilities {
        let Counts { requests, accepts } = self.window.total(now);
        let (requests, accepts) = (requests as f64, accepts as f64);
        let interactive = rejection_probability(requests, accepts, self.config.k);
        let k_batch = match state {
            OverloadState::Normal => self.config.k,
            _ => self.config.k_batch,
        };
        Probabilities {
            interactive,
            batch: rejection_probability(requests, accepts, k_batch).max(interactive),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The SRE book's example: with K = 2, a backend accepting half of 100 requests sees no
    /// client-side rejection; accepting a quarter, about half are rejected locally.
    #[test]
    fn sre_formula() {
        assert_eq!(rejection_probability(0.0, 0.0, 2.0), 0.0);
        assert_eq!(rejection_probability(100.0, 50.0, 2.0), 0.0);
        let p = rejection_probability(100.0, 25.0, 2.0);
        assert!((p - 50.0 / 101.0).abs() < 1e-12, "{p}");
        // Nothing accepted: almost everything rejected, never all.
        let p = rejection_probability(1000.0, 0.0, 2.0);
        assert!((p - 1000.0 / 1001.0).abs() < 1e-12, "{p}");
    }

    #[test]
    fn batch_is_shed_first_outside_normal() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(ThrottleConfig::default(), t0);
        for i in 0..100 {
            throttle.record(i % 3 == 0, t0);
        }
        let normal = throttle.probabilities(OverloadState::Normal, t0);
        assert_eq!(normal.interactive, normal.batch);
        let critical = throttle.probabilities(OverloadState::Critical, t0);
        assert!(critical.batch > critical.interactive);
        assert!((critical.batch - (100.0 - 34.0) / 101.0).abs() < 1e-12);
        // Two minutes later the window is empty.
        let later = t0 + Duration::from_secs(121);
        assert_eq!(
            throttle.probabilities(OverloadState::Critical, later),
            Probabilities::default()
        );
    }

    proptest! {
        #[test]
        fn probability_is_a_probability_and_zero_while_accepting_enough(
            requests in 0u32..100_000, accepted in 0.0f64..=1.0, k in 1.0f64..4.0,
        ) {
            let accepts = (f64::from(requests) * accepted).floor();
            let p = rejection_probability(f64::from(requests), accepts, k);
            prop_assert!((0.0..1.0).contains(&p));
            if accepts * k >= f64::from(requests) {
                prop_assert_eq!(p, 0.0);
            }
        }
    }
}
