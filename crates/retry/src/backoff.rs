//! How long to wait between attempts when the provider does not say.
//!
//! The strategies of Marc Brooker's "Exponential Backoff and Jitter": without jitter, clients
//! that failed together retry together and collide again; with it they spread out. Full and
//! decorrelated jitter need far fewer calls under contention (see the `aws_backoff` bench).

use std::time::Duration;

use rand::RngExt as _;
use tollgate_core::rng::Rng;

/// How much of the exponential delay is randomised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Jitter {
    /// None: `min(cap, base × multiplier^n)`, exactly.
    None,
    /// Anywhere in `[0, delay]`.
    Full,
    /// Half fixed, half random: `delay/2 + [0, delay/2]`.
    Equal,
    /// `delay × (1 ± share)`: `Proportional(0.25)` waits between 75 % and 125 % of the delay.
    Proportional(f64),
}

/// A backoff strategy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backoff {
    /// `min(cap, base × multiplier^(retry − 1))`, with jitter.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The growth per retry.
        multiplier: f64,
        /// The longest delay.
        cap: Duration,
        /// The randomisation.
        jitter: Jitter,
    },
    /// `min(cap, random(base, max(previous, base) × 3))`: decorrelated jitter.
    Decorrelated {
        /// The shortest delay.
        base: Duration,
        /// The longest delay.
        cap: Duration,
    },
    /// Always the same delay.
    Fixed(Duration),
}

impl Backoff {
    /// Exponential backoff doubling from `base` up to `cap`, with full jitter.
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        Self::Exponential {
            base,
            multiplier: 2.0,
            cap,
            jitter: Jitter::Full,
        }
    }

    /// A patient backoff for work that can wait (batch jobs, background work): 1 s, doubling,
    /// at most 60 s, ±25 % jitter. Unlike full jitter, every wait is at least three quarters of
    /// the schedule (1 s, 2 s, 4 s, 8 s, ...): callers spread out without ever retrying at once.
    pub const fn patient() -> Self {
        Self::Exponential {
            base: Duration::from_secs(1),
            multiplier: 2.0,
            cap: Duration::from_secs(60),
            jitter: Jitter::Proportional(0.25),
        }
    }

    /// The same strategy with `jitter` (exponential only).
    pub const fn with_jitter(self, jitter: Jitter) -> Self {
        match self {
            Self::Exponential {
                base,
                multiplier,
                cap,
                ..
            } => Self::Exponential {
                base,
                multiplier,
                cap,
                jitter,
            },
            other => other,
        }
    }

    /// The delay before retry number `retry` (1 for the first retry); `previous` is the delay
    /// before the previous retry (decorrelated jitter grows from it).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut Rng) -> Duration {
        match *self {
            Self::Fixed(delay) => delay,
            Self::Exponential {
                base,
                multiplier,
                cap,
                jitter,
            } => {
                let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                let raw = (base.as_secs_f64() * multiplier.powi(exponent)).min(cap.as_secs_f64());
                let jittered = match jitter {
                    Jitter::None => raw,
                    Jitter::Full => rng.random_range(0.0..=raw),
                    Jitter::Equal => raw / 2.0 + rng.random_range(0.0..=raw / 2.0),
                    Jitter::Proportional(share) => {
                        raw * (1.0 + share * rng.random_range(-1.0..=1.0))
                    }
                };
                Duration::from_secs_f64(jittered.clamp(0.0, cap.as_secs_f64()))
            }
            Self::Decorrelated { base, cap } => {
                // The first retry draws from [base, 3 × base], as Brooker's formula starts from
                // `sleep = base`: clients that failed together do not retry together.
                let low = base.as_secs_f64();
                let high = previous.max(base).as_secs_f64() * 3.0;
                Duration::from_secs_f64(rng.random_range(low..=high).min(cap.as_secs_f64()))
            }
        }
    }
}

impl Default for Backoff {
    /// Full jitter from 500 ms, doubling, at most 30 s.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(500), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tollgate_core::rng;

    use super::*;

    #[test]
    fn exponential_without_jitter_doubles_to_the_cap() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60))
            .with_jitter(Jitter::None);
        let mut rng = rng::seeded(1);
        let delays: Vec<u64> = (1..=8)
            .map(|n| b.delay(n, Duration::ZERO, &mut rng).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    proptest! {
        #[test]
        fn every_strategy_stays_in_its_bounds(retry in 1u32..20, seed in any::<u64>(), previous_ms in 0u64..120_000) {
            let (base, cap) = (Duration::from_millis(100), Duration::from_secs(10));
            let previous = Duration::from_millis(previous_ms);
            let mut rng = rng::seeded(seed);
            let raw = (0.1 * 2f64.powi(retry as i32 - 1)).min(10.0);
            let full = Backoff::exponential(base, cap).delay(retry, previous, &mut rng);
            prop_assert!(full.as_secs_f64() <= raw + 1e-9);
            let equal = Backoff::exponential(base, cap).with_jitter(Jitter::Equal).delay(retry, previous, &mut rng);
            prop_assert!(equal.as_secs_f64() >= raw / 2.0 - 1e-9 && equal.as_secs_f64() <= raw + 1e-9);
            let patient = Backoff::patient().delay(retry, previous, &mut rng).as_secs_f64();
            let patient_raw = 2f64.powi(retry as i32 - 1).min(60.0);
            prop_assert!(patient >= patient_raw * 0.75 - 1e-9 && patient <= (patient_raw * 1.25).min(60.0) + 1e-9);
            let decorrelated = Backoff::Decorrelated { base, cap }.delay(retry, previous, &mut rng);
            prop_assert!(decorrelated >= base.min(cap) && decorrelated <= cap);
        }
    }
}
