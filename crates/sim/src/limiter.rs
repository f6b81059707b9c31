//! Per-key rate limits, enforced as the providers do: a token bucket per dimension holding a
//! minute's quota and refilled continuously, or Azure-style fixed windows.
//!
//! A request is charged at admission on its estimate (prompt tokens + `max_tokens`) and the
//! unused part of the output estimate is refunded when the answer is complete, so a client that
//! asks for 4,096 tokens and gets 50 pays for 4,096 only while the answer is being generated.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Limits, Window};

/// One limit on one dimension.
#[derive(Clone, Debug)]
pub(crate) enum Meter {
    /// Holds up to `capacity`, refilled at `capacity` per minute.
    Bucket {
        capacity: f64,
        level: f64,
        updated: Instant,
    },
    /// Allows `limit` per fixed window of `window`.
    Fixed {
        limit: u64,
        window: Duration,
        started: Instant,
        used: u64,
    },
}

/// What a meter reports in rate-limit headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MeterView {
    /// The per-minute limit.
    pub(crate) limit: u64,
    /// What can still be taken now.
    pub(crate) remaining: u64,
    /// Until the meter is full again.
    pub(crate) reset: Duration,
}

const MINUTE: f64 = 60.0;

impl Meter {
    pub(crate) fn new(per_minute: u64, window: Window, now: Instant) -> Self {
        match window {
            Window::TokenBucket => Self::Bucket {
                capacity: per_minute as f64,
                level: per_minute as f64,
                updated: now,
            },
            Window::Fixed(window) => {
                let share = per_minute as f64 * window.as_secs_f64() / MINUTE;
                Self::Fixed {
                    limit: (share.ceil() as u64).max(1),
                    window,
                    started: now,
                    used: 0,
                }
            }
        }
    }

    fn refresh(&mut self, now: Instant) {
        match self {
            Self::Bucket {
                capacity,
                level,
                updated,
            } => {
                let elapsed = now.saturating_duration_since(*updated).as_secs_f64();
                *level = (*level + elapsed * *capacity / MINUTE).min(*capacity);
                *updated = now;
            }
            Self::Fixed {
                window,
                started,
                used,
                ..
            } => {
                if now >= *started + *window {
                    let windows =
                        now.duration_since(*started).as_nanos() / window.as_nanos().max(1);
                    *started += *window * u32::try_from(windows).unwrap_or(u32::MAX);
                    *used = 0;
                }
            }
        }
    }

    /// The most one request can ever take.
    pub(crate) fn ceiling(&self) -> u64 {
        match self {
            Self::Bucket { capacity, .. } => *capacity as u64,
            Self::Fixed { limit, .. } => *limit,
        }
    }

    /// `None` if `amount` fits now, else how long until it will.
    fn wait_for(&mut self, amount: u64, now: Instant) -> Option<Duration> {
        self.refresh(now);
        match self {
            Self::Bucket {
                capacity, level, ..
            } => {
                let missing = amount as f64 - *level;
                (missing > 0.0).then(|| Duration::from_secs_f64(missing * MINUTE / *capacity))
            }
            Self::Fixed {
                limit,
                window,
                started,
                used,
            } => (*used + amount > *limit)
                .then(|| (*started + *window).saturating_duration_since(now)),
        }
    }

    fn take(&mut self, amount: u64) {
        match self {
            Self::Bucket { level, .. } => *level -= amount as f64,
            Self::Fixed { used, .. } => *used += amount,
        }
    }

    fn give_back(&mut self, amount: u64, now: Instant) {
        self.refresh(now);
        match self {
            Self::Bucket {
                capacity, level, ..
            } => *level = (*level + amount as f64).min(*capacity),
            Self::Fixed { used, .. } => *used = used.saturating_sub(amount),
        }
    }

    pub(crate) fn view(&mut self, per_minute: u64, now: Instant) -> MeterView {
        self.refresh(now);
        match self {
            Self::Bucket {
                capacity, level, ..
            } => MeterView {
                limit: per_minute,
                remaining: level.max(0.0).floor() as u64,
                reset: Duration::from_secs_f64((*capacity - level.max(0.0)) * MINUTE / *capacity),
            },
            Self::Fixed {
                limit,
                window,
                started,
                used,
            } => MeterView {
                limit: per_minute,
                remaining: limit.saturating_sub(*used),
                reset: if *used == 0 {
                    Duration::ZERO
                } else {
                    (*started + *window).saturating_duration_since(now)
                },
            },
        }
    }
}

/// The dimensions a key is limited on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Dimension {
    Requests,
    Tokens,
    InputTokens,
    OutputTokens,
}

/// What one request asks of the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) input: u64,
    pub(crate) output: u64,
}

impl Charge {
    fn amount(self, dimension: Dimension) -> u64 {
        match dimension {
            Dimension::Requests => 1,
            Dimension::Tokens => self.input + self.output,
            Dimension::InputTokens => self.input,
            Dimension::OutputTokens => self.output,
        }
    }
}

/// A refusal: which limit, and how long until the request would fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) dimension: Dimension,
    pub(crate) limit: u64,
    pub(crate) requested: u64,
    pub(crate) wait: Duration,
}

/// All the meters of one key.
#[derive(Clone, Debug)]
pub(crate) struct KeyLimiter {
    meters: Vec<(Dimension, u64, Meter)>,
}

impl KeyLimiter {
    pub(crate) fn new(limits: Limits, now: Instant) -> Self {
        let dimensions = [
            (Dimension::Requests, limits.requests_per_minute),
            (Dimension::Tokens, limits.tokens_per_minute),
            (Dimension::InputTokens, limits.input_tokens_per_minute),
            (Dimension::OutputTokens, limits.output_tokens_per_minute),
        ];
        let meters = dimensions
            .into_iter()
            .filter_map(|(dimension, per_minute)| {
                per_minute.map(|per_minute| {
                    (
                        dimension,
                        per_minute,
                        Meter::new(per_minute, limits.window, now),
                    )
                })
            })
            .collect();
        Self { meters }
    }

    /// A dimension on which `charge` can never fit, however long the client waits.
    pub(crate) fn too_large(&self, charge: Charge) -> Option<Refusal> {
        self.meters
            .iter()
            .find_map(|(dimension, per_minute, meter)| {
                let requested = charge.amount(*dimension);
                (requested > meter.ceiling()).then_some(Refusal {
                    dimension: *dimension,
                    limit: *per_minute,
                    requested,
                    wait: Duration::MAX,
                })
            })
    }

    /// Takes `charge` from every meter, or nothing and the longest wait among the refusals.
    pub(crate) fn admit(&mut self, charge: Charge, now: Instant) -> Result<(), Refusal> {
        let mut refusal: Option<Refusal> = None;
        for (dimension, per_minute, meter) in &mut self.meters {
            let requested = charge.amount(*dimension);
            if let Some(wait) = meter.wait_for(requested, now)
                && refusal.is_none_or(|r| wait > r.wait)
            {
                refusal = Some(Refusal {
                    dimension: *dimension,
                    limit: *per_minute,
                    requested,
                    wait,
                });
            }
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        for (dimension, _, meter) in &mut self.meters {
            meter.take(charge.amount(*dimension));
        }
        Ok(())
    }

    /// Returns what an admitted request did not use.
    pub(crate) fn refund(&mut self, unused: Charge, now: Instant) {
        for (dimension, _, meter) in &mut self.meters {
            if *dimension != Dimension::Requests {
                meter.give_back(unused.amount(*dimension), now);
            }
        }
    }

    /// The header view of one dimension, if it is limited.
    pub(crate) fn view(&mut self, dimension: Dimension, now: Instant) -> Option<MeterView> {
        self.meters
            .iter_mut()
            .find(|(d, _, _)| *d == dimension)
            .map(|(_, per_minute, meter)| meter.view(*per_minute, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(rpm: u64, tpm: u64, window: Window) -> Limits {
        Limits {
            requests_per_minute: Some(rpm),
            tokens_per_minute: Some(tpm),
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
            window,
        }
    }

    #[test]
    fn a_bucket_refills_continuously_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut limiter = KeyLimiter::new(limits(60, 6_000, Window::TokenBucket), t0);
        let charge = Charge {
            input: 1_000,
            output: 2_000,
        };
        assert_eq!(limiter.admit(charge, t0), Ok(()));
        assert_eq!(limiter.admit(charge, t0), Ok(()));
        let refusal = limiter.admit(charge, t0).unwrap_err();
        assert_eq!(refusal.dimension, Dimension::Tokens);
        assert_eq!(
            refusal.wait,
            Duration::from_secs(30),
            "3,000 tokens at 100 per second"
        );
        let view = limiter.view(Dimension::Tokens, t0).unwrap();
        assert_eq!(
            (view.limit, view.remaining, view.reset),
            (6_000, 0, Duration::from_secs(60))
        );
        assert_eq!(limiter.admit(charge, t0 + Duration::from_secs(30)), Ok(()));
    }

    #[test]
    fn refunds_return_unused_output() {
        let t0 = Instant::now();
        let mut limiter = KeyLimiter::new(limits(60, 5_000, Window::TokenBucket), t0);
        assert_eq!(
            limiter.admit(
                Charge {
                    input: 100,
                    output: 4_096
                },
                t0
            ),
            Ok(())
        );
        limiter.refund(
            Charge {
                input: 0,
                output: 4_046,
            },
            t0,
        );
        let view = limiter.view(Dimension::Tokens, t0).unwrap();
        assert_eq!(view.remaining, 5_000 - 150);
        let requests = limiter.view(Dimension::Requests, t0).unwrap();
        assert_eq!(requests.remaining, 59, "a request is never refunded");
    }

    #[test]
    fn too_large_is_about_the_ceiling_not_the_level() {
        let t0 = Instant::now();
        let limiter = KeyLimiter::new(limits(60, 30_000, Window::TokenBucket), t0);
        let refusal = limiter
            .too_large(Charge {
                input: 30_000,
                output: 4_307,
            })
            .unwrap();
        assert_eq!(
            (refusal.dimension, refusal.limit, refusal.requested),
            (Dimension::Tokens, 30_000, 34_307)
        );
        assert!(
            limiter
                .too_large(Charge {
                    input: 29_000,
                    output: 1_000
                })
                .is_none()
        );
    }

    #[test]
    fn fixed_windows_scale_the_minute_quota() {
        let t0 = Instant::now();
        let mut limiter = KeyLimiter::new(
            limits(60, 600_000, Window::Fixed(Duration::from_secs(10))),
            t0,
        );
        let charge = Charge {
            input: 1,
            output: 1,
        };
        for _ in 0..10 {
            assert_eq!(limiter.admit(charge, t0 + Duration::from_secs(1)), Ok(()));
        }
        let refusal = limiter
            .admit(charge, t0 + Duration::from_secs(4))
            .unwrap_err();
        assert_eq!(
            (refusal.dimension, refusal.wait),
            (Dimension::Requests, Duration::from_secs(6))
        );
        assert_eq!(limiter.admit(charge, t0 + Duration::from_secs(10)), Ok(()));
    }

    proptest! {
        /// Over any interval, a bucket admits at most its capacity plus what refills in the
        /// interval: the configured quota, to the request.
        #[test]
        fn a_bucket_never_admits_more_than_its_quota(
            gaps in prop::collection::vec(0u64..3_000, 1..300),
            sizes in prop::collection::vec(1u64..2_000, 300),
        ) {
            let tpm = 10_000;
            let t0 = Instant::now();
            let mut limiter = KeyLimiter::new(limits(1_000_000, tpm, Window::TokenBucket), t0);
            let mut now = t0;
            let mut admitted: Vec<(Duration, u64)> = Vec::new();
            for (gap, size) in gaps.iter().zip(&sizes) {
                now += Duration::from_millis(*gap);
                if limiter.admit(Charge { input: *size, output: 0 }, now).is_ok() {
                    admitted.push((now - t0, *size));
                }
            }
            for (i, (start, _)) in admitted.iter().enumerate() {
                let mut total = 0;
                for (at, size) in &admitted[i..] {
                    total += size;
                    let allowed = tpm as f64 + (*at - *start).as_secs_f64() * tpm as f64 / 60.0;
                    prop_assert!(total as f64 <= allowed + 1e-6, "{total} > {allowed} over {:?}", *at - *start);
                }
            }
        }

        /// A fixed window never admits more than its share of the minute's quota.
        #[test]
        fn a_fixed_window_never_admits_more_than_its_share(
            gaps in prop::collection::vec(0u64..700, 1..300),
        ) {
            let t0 = Instant::now();
            let window = Duration::from_secs(1);
            let mut limiter = KeyLimiter::new(limits(120, 1_000_000, Window::Fixed(window)), t0);
            let mut now = t0;
            let mut per_window = std::collections::BTreeMap::new();
            for gap in gaps {
                now += Duration::from_millis(gap);
                if limiter.admit(Charge { input: 1, output: 0 }, now).is_ok() {
                    *per_window.entry((now - t0).as_secs()).or_insert(0) += 1;
                }
            }
            prop_assert!(per_window.values().all(|&n| n <= 2), "{per_window:?}");
        }
    }
}
