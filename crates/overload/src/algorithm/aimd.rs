//! [`Aimd`]: additive increase while calls succeed, multiplicative decrease when one is shed.

use std::time::Duration;

use tokio::time::Instant;

use super::{LimitAlgorithm, Sample};

/// Additive increase, multiplicative decrease.
///
/// On success, when at least half the limit is in use: `limit += increase / limit` (one more
/// call per round trip, as TCP) or `limit += increase` ([`per_success`](Self::per_success),
/// Netflix's). On a drop, or a latency above the [timeout](Self::with_timeout):
/// `limit *= backoff`.
///
/// After a drop, the limit remembers where it was (the ceiling) and grows ten times slower
/// (the [probe factor](Self::with_probe)) between `ceiling × backoff` and the ceiling: a
/// provider with a fixed capacity is probed gently instead of being hit on every cycle. Once the
/// limit passes the ceiling without a drop the ceiling is forgotten (the capacity grew).
#[derive(Clone, Debug)]
pub struct Aimd {
    limit: f64,
    min: usize,
    max: usize,
    increase: f64,
    per_limit: bool,
    backoff: f64,
    probe: f64,
    timeout: Option<Duration>,
    ceiling: Option<f64>,
    last_decrease: Option<Instant>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// Starts at 4 calls, between 1 and 1,000; `+1/limit` per success, `×0.9` per drop, probes
    /// at a tenth of the pace below the last ceiling.
    pub const fn new() -> Self {
        Self {
            limit: 4.0,
            min: 1,
            max: 1000,
            increase: 1.0,
            per_limit: true,
            backoff: 0.9,
            probe: 0.1,
            timeout: None,
            ceiling: None,
            last_decrease: None,
        }
    }

    /// Netflix's `AIMDLimit` with its defaults: starts at 20, between 20 and 200, `+1` per
    /// success, `×0.9` per drop or per call slower than 5 s, no gentle probing.
    pub const fn netflix() -> Self {
        Self {
            limit: 20.0,
            min: 20,
            max: 200,
            increase: 1.0,
            per_limit: false,
            backoff: 0.9,
            probe: 1.0,
            timeout: Some(Duration::from_secs(5)),
            ceiling: None,
            last_decrease: None,
        }
    }

    /// The limit to start from.
    ///
    /// # Panics
    ///
    /// When 0.
    pub fn with_initial(mut self, limit: usize) -> Self {
        assert!(limit > 0, "an initial limit must allow one call");
        self.limit = limit as f64;
        self
    }

    /// The bounds the limit stays within; the initial limit is clamped into them.
    ///
    /// # Panics
    ///
    /// When `min` is 0 or above `max`.
    pub fn with_bounds(mut self, min: usize, max: usize) -> Self {
        assert!(min > 0 && min <= max, "bounds must satisfy 0 < min <= max");
        self.min = min;
        self.max = max;
        self.limit = self.limit.clamp(min as f64, max as f64);
        self
    }

    /// The factor applied on a drop.
    ///
    /// # Panics
    ///
    /// When not in [0.5, 1).
    pub fn with_backoff(mut self, backoff: f64) -> Self {
        assert!(
            (0.5..1.0).contains(&backoff),
            "the backoff must be in [0.5, 1)"
        );
        self.backoff = backoff;
        self
    }

    /// A sample slower than `timeout` counts as a drop.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The pace of growth just below the last ceiling, as a fraction of the normal pace (1.0
    /// turns gentle probing off).
    ///
    /// # Panics
    ///
    /// When not in (0, 1].
    pub fn with_probe(mut self, probe: f64) -> Self {
        assert!(
            probe > 0.0 && probe <= 1.0,
            "the probe factor must be in (0, 1]"
        );
        self.probe = probe;
        self
    }

    /// Grows by `increase` per success rather than `increase / limit`.
    pub fn per_success(mut self, increase: f64) -> Self {
        self.increase = increase;
        self.per_limit = false;
        self
    }

    fn clamp(&self, limit: f64) -> f64 {
        limit.clamp(self.min as f64, self.max as f64)
    }
}

impl LimitAlgorithm for Aimd {
    fn limit(&self) -> usize {
        // Whole calls only; the fraction accumulates.
        (self.limit as usize).clamp(self.min, self.max)
    }

    fn update(&mut self, sample: &Sample, now: Instant) -> usize {
        let dropped = sample.dropped || self.timeout.is_some_and(|t| sample.latency > t);
        if dropped {
            if self.last_decrease.is_some_and(|at| sample.started < at) {
                // Sent before the last decrease: that overshoot is already paid for.
                return self.limit();
            }
            self.ceiling = Some(self.limit);
            self.limit = self.clamp(self.limit * self.backoff);
            self.last_decrease = Some(now);
        } else if sample.in_flight * 2 >= self.limit() {
            let mut step = if self.per_limit {
                self.increase / self.limit
            } else {
                self.increase
            };
            match self.ceiling {
                Some(ceiling) if self.limit >= ceiling => self.ceiling = None,
                Some(ceiling) if self.limit >= ceiling * self.backoff => step *= self.probe,
                _ => {}
            }
            self.limit = self.clamp(self.limit + step);
        }
        self.limit()
    }

    fn boxed_clone(&self) -> Box<dyn LimitAlgorithm> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn success(started: Instant, in_flight: usize) -> Sample {
        Sample {
            started,
            latency: Duration::from_millis(10),
            in_flight,
            dropped: false,
        }
    }

    fn drop_at(started: Instant) -> Sample {
        Sample {
            dropped: true,
            ..success(started, 1)
        }
    }

    /// Netflix concurrency-limits `AIMDLimitTest`: 20 → 21 on a success with 10 in flight.
    #[test]
    fn netflix_aimd_increases_on_success() {
        let now = Instant::now();
        let mut aimd = Aimd::netflix();
        assert_eq!(aimd.limit(), 20);
        assert_eq!(aimd.update(&success(now, 10), now), 21);
    }

    /// Netflix `AIMDLimitTest`: 30 → 27 on a drop (backoff 0.9).
    #[test]
    fn netflix_aimd_decreases_on_drop() {
        let now = Instant::now();
        let mut aimd = Aimd::netflix().with_initial(30);
        assert_eq!(aimd.update(&drop_at(now), now), 27);
    }

    #[test]
    fn a_slow_call_counts_as_a_drop_and_an_idle_limit_does_not_grow() {
        let now = Instant::now();
        let mut aimd = Aimd::netflix().with_initial(30);
        let slow = Sample {
            latency: Duration::from_secs(6),
            ..success(now, 30)
        };
        assert_eq!(aimd.update(&slow, now), 27);
        // 5 in flight of 27: the limit is not what holds calls back, so it does not grow.
        assert_eq!(aimd.update(&success(now, 5), now), 27);
    }

    #[test]
    fn one_decrease_per_overshoot() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new().with_initial(10);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(aimd.update(&drop_at(t0), t1), 9);
        // The rest of the burst sent at t0 comes back shed: already paid for.
        assert_eq!(aimd.update(&drop_at(t0), t1), 9);
        assert_eq!(aimd.update(&drop_at(t0), t1), 9);
        // A call sent after the decrease and shed is news.
        let t2 = t1 + Duration::from_millis(1);
        assert_eq!(aimd.update(&drop_at(t2), t2), 8);
    }

    #[test]
    fn growth_is_one_per_round_trip_and_gentle_below_the_ceiling() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new().with_initial(8);
        // 8 successes at limit 8: about one more call.
        for _ in 0..8 {
            aimd.update(&success(t0, 8), t0);
        }
        assert_eq!(aimd.limit(), 8, "8 + 8 × 1/8.x is just under 9");
        aimd.update(&success(t0, 8), t0);
        assert_eq!(aimd.limit(), 9);
        // A drop at 9: the ceiling is 9.x, the limit 8.x.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(aimd.update(&drop_at(t1), t1), 8);
        // Back to 9 takes ten times as many successes as the climb did.
        let mut successes = 0;
        while aimd.update(&success(t1, 8), t1) < 9 {
            successes += 1;
        }
        assert!((60..=100).contains(&successes), "{successes}");
    }

    #[test]
    fn limits_stay_within_bounds() {
        let mut now = Instant::now();
        let mut aimd = Aimd::new().with_initial(3).with_bounds(2, 5);
        for _ in 0..10 {
            now += Duration::from_secs(1);
            aimd.update(&drop_at(now), now);
        }
        assert_eq!(aimd.limit(), 2);
        for _ in 0..1000 {
            aimd.update(&success(now, 5), now);
        }
        assert_eq!(aimd.limit(), 5);
    }
}
