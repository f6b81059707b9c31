//! Limit algorithms: how the number of calls allowed in flight follows what the upstream says.
//!
//! - [`Aimd`] (the default): additive increase while calls succeed, multiplicative decrease
//!   when the upstream sheds one (529 "Overloaded", 503) or a call times out. Providers shed
//!   rather than queue, so a shed call is the clearest signal there is.
//! - [`Gradient`]: Envoy's gradient controller, for upstreams that queue: the limit follows the
//!   ratio of the ideal latency to the latency seen now.
//!
//! Both avoid the known failure modes of adaptive limits: a timeout counts as a drop (the
//! limit never climbs under steady timeouts), a dropped call reports no latency (a 529 that
//! comes back in 2 ms is not a fast call), a drop of a call sent before the last decrease is
//! not counted again (one decrease per round trip, not one per call of the burst that
//! overshot), and the limit only grows when it is being used.

use std::fmt;
use std::time::Duration;

use rand::RngExt as _;
use tokio::time::Instant;
use tollgate_core::rng::{self, Rng};

/// What one finished call says about the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the call was sent (after it had its permit).
    pub started: Instant,
    /// Its latency, normalised (see [`LatencyMeasure`](crate::LatencyMeasure)); not meaningful
    /// for a drop.
    pub latency: Duration,
    /// Calls in flight when it was sent, itself included.
    pub in_flight: usize,
    /// The upstream shed it (overloaded) or it timed out.
    pub dropped: bool,
}

/// An algorithm that sets the concurrency limit from samples.
///
/// One instance per scope (the layer clones a prototype), updated under a lock: no need to be
/// thread-safe beyond being `Send + Sync` plain data.
pub trait LimitAlgorithm: fmt::Debug + Send + Sync + 'static {
    /// The limit now.
    fn limit(&self) -> usize;

    /// Takes one sample in, at `now`, and returns the new limit.
    fn update(&mut self, sample: &Sample, now: Instant) -> usize;

    /// A fresh instance with the same settings, for a new scope.
    fn boxed_clone(&self) -> Box<dyn LimitAlgorithm>;
}

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

/// Envoy's gradient controller, with latency normalised for LLM calls.
///
/// Every [update interval](Self::with_interval) the samples of the interval are summarised (their
/// median, `sample_rtt`) and
///
/// ```text
/// gradient = clamp((min_rtt + min_rtt × buffer) / sample_rtt, 0.5, 2.0)
/// limit    = gradient × limit + √(gradient × limit)
/// ```
///
/// The √ headroom keeps the limit growing while latency stays near the ideal. `min_rtt`, the
/// latency with almost nothing in flight, is measured at the start and again every
/// [`min_rtt_interval`](Self::with_min_rtt_interval) (±15 % jitter), and whenever the limit has
/// sat at its minimum for 5 intervals: the limit drops to `min_concurrency` (3) until
/// `min_rtt_samples` (50) calls have finished, and their median becomes `min_rtt`.
///
/// A drop ends the interval at once with the worst gradient (0.5): LLM providers shed load
/// (529) rather than queue it, and a shed call has no latency to compare. Against such a
/// provider latency stays flat up to the capacity, so the gradient keeps overshooting and
/// halving; [`Aimd`] is the better fit there (see `docs/overload-limit.svg`). Gradient suits
/// upstreams that queue — a self-hosted model server, a gateway — where latency rises first.
#[derive(Clone, Debug)]
pub struct Gradient {
    limit: f64,
    max: usize,
    buffer: f64,
    interval: Duration,
    min_rtt_interval: Duration,
    min_concurrency: usize,
    min_rtt_samples: usize,
    jitter: f64,
    seed: Option<u64>,
    rng: Option<Rng>,
    min_rtt: Option<Duration>,
    phase: Phase,
    samples: Vec<Duration>,
    drops: usize,
    /// The most calls in flight seen in the interval.
    busiest: usize,
    window_start: Option<Instant>,
    next_min_rtt: Option<Instant>,
    at_min: u32,
    last_decrease: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Measuring min RTT; the limit to return to after.
    MeasuringMinRtt {
        resume: f64,
    },
    Running,
}

impl Default for Gradient {
    fn default() -> Self {
        Self::new()
    }
}

impl Gradient {
    /// Envoy's defaults (buffer 25 %, min concurrency 3, 50 samples for min RTT, 15 % jitter,
    /// limit up to 1,000) with a 1 s update interval and a new min RTT every 60 s; starts at
    /// 10 calls once min RTT is known.
    pub fn new() -> Self {
        Self {
            limit: 10.0,
            max: 1000,
            buffer: 0.25,
            interval: Duration::from_secs(1),
            min_rtt_interval: Duration::from_secs(60),
            min_concurrency: 3,
            min_rtt_samples: 50,
            jitter: 0.15,
            seed: None,
            rng: None,
            min_rtt: None,
            phase: Phase::MeasuringMinRtt { resume: 10.0 },
            samples: Vec::new(),
            drops: 0,
            busiest: 0,
            window_start: None,
            next_min_rtt: None,
            at_min: 0,
            last_decrease: None,
        }
    }

    /// The limit once min RTT is known.
    ///
    /// # Panics
    ///
    /// When 0.
    pub fn with_initial(mut self, limit: usize) -> Self {
        assert!(limit > 0, "an initial limit must allow one call");
        self.limit = limit as f64;
        self.phase = Phase::MeasuringMinRtt {
            resume: limit as f64,
        };
        self
    }

    /// The highest limit.
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max.max(1);
        self
    }

    /// The share of min RTT tolerated on top of it before the limit shrinks.
    pub fn with_buffer(mut self, buffer: f64) -> Self {
        self.buffer = buffer.max(0.0);
        self
    }

    /// How often the limit is recomputed.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often min RTT is measured again.
    pub fn with_min_rtt_interval(mut self, interval: Duration) -> Self {
        self.min_rtt_interval = interval;
        self
    }

    /// The limit while min RTT is measured, and the samples measured.
    pub fn with_min_rtt_measure(mut self, concurrency: usize, samples: usize) -> Self {
        self.min_concurrency = concurrency.max(1);
        self.min_rtt_samples = samples.max(1);
        self
    }

    /// Seeds the jitter of the min RTT schedule (repeatable runs).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self.rng = None;
        self
    }

    /// The min RTT measured last, if any.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Envoy's formula: the next limit from the current one, min RTT, the buffer share and
    /// the interval's sample RTT.
    pub fn next_limit(limit: f64, min_rtt: Duration, buffer: f64, sample_rtt: Duration) -> f64 {
        let buffered = min_rtt.as_secs_f64() * (1.0 + buffer);
        let gradient = if sample_rtt.is_zero() {
            2.0
        } else {
            (buffered / sample_rtt.as_secs_f64()).clamp(0.5, 2.0)
        };
        let limit = gradient * limit;
        limit + limit.sqrt()
    }

    fn median(samples: &mut [Duration]) -> Option<Duration> {
        if samples.is_empty() {
            return None;
        }
        let middle = samples.len() / 2;
        Some(*samples.select_nth_unstable(middle).1)
    }

    fn schedule_min_rtt(&mut self, now: Instant) {
        let seed = self.seed;
        let rng = self.rng.get_or_insert_with(|| match seed {
            Some(seed) => rng::seeded(seed),
            None => rng::from_entropy(),
        });
        let jitter = self
            .min_rtt_interval
            .mul_f64(self.jitter * rng.random::<f64>());
        self.next_min_rtt = Some(now + self.min_rtt_interval + jitter);
    }

    fn start_min_rtt(&mut self) {
        self.phase = Phase::MeasuringMinRtt { resume: self.limit };
        self.samples.clear();
        self.drops = 0;
    }

    fn close_window(&mut self, now: Instant) {
        let Some(min_rtt) = self.min_rtt else { return };
        let sample_rtt = if self.drops > 0 {
            // Worst gradient: the formula's own lower clamp.
            Some(Duration::MAX)
        } else {
            Self::median(&mut self.samples)
        };
        if let Some(sample_rtt) = sample_rtt {
            let mut next = Self::next_limit(self.limit, min_rtt, self.buffer, sample_rtt);
            if next < self.limit {
                self.last_decrease = Some(now);
            } else if (self.busiest * 2) < self.limit() {
                // Less than half of it was used: the limit is not what holds calls back.
                next = self.limit;
            }
            self.limit = next.clamp(1.0, self.max as f64);
            self.at_min = if self.limit() <= self.min_concurrency {
                self.at_min + 1
            } else {
                0
            };
        }
        self.samples.clear();
        self.drops = 0;
        self.busiest = 0;
        self.window_start = Some(now);
        if self.at_min >= 5 || self.next_min_rtt.is_some_and(|at| now >= at) {
            self.at_min = 0;
            self.start_min_rtt();
        }
    }
}

impl LimitAlgorithm for Gradient {
    fn limit(&self) -> usize {
        match self.phase {
            Phase::MeasuringMinRtt { .. } => self.min_concurrency,
            Phase::Running => (self.limit as usize).clamp(1, self.max),
        }
    }

    fn update(&mut self, sample: &Sample, now: Instant) -> usize {
        if sample.dropped && self.last_decrease.is_some_and(|at| sample.started < at) {
            return self.limit();
        }
        match self.phase {
            Phase::MeasuringMinRtt { resume } => {
                if sample.dropped {
                    return self.limit();
                }
                self.samples.push(sample.latency);
                if self.samples.len() >= self.min_rtt_samples {
                    self.min_rtt = Self::median(&mut self.samples);
                    self.samples.clear();
                    self.limit = resume;
                    self.phase = Phase::Running;
                    self.window_start = Some(now);
                    self.schedule_min_rtt(now);
                }
            }
            Phase::Running => {
                self.busiest = self.busiest.max(sample.in_flight);
                if sample.dropped {
                    self.drops += 1;
                } else {
                    self.samples.push(sample.latency);
                }
                let start = *self.window_start.get_or_insert(now);
                // A drop closes the interval at once: a shedding upstream gives no latency
                // to wait for.
                if sample.dropped || now.saturating_duration_since(start) >= self.interval {
                    self.close_window(now);
                }
            }
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

    /// Envoy's gradient formula: `gradient = (minRTT + B) / sampleRTT` clamped to [0.5, 2],
    /// `limit = gradient × limit + √(gradient × limit)`.
    #[test]
    fn envoy_gradient_formula() {
        let ms = Duration::from_millis;
        // min RTT 10 ms + 25 % buffer = 12.5 ms.
        let same = Gradient::next_limit(100.0, ms(10), 0.25, Duration::from_micros(12_500));
        assert!(
            (same - 110.0).abs() < 1e-9,
            "gradient 1: 100 + √100 = {same}"
        );
        let slow = Gradient::next_limit(100.0, ms(10), 0.25, ms(25));
        assert!(
            (slow - (50.0 + 50f64.sqrt())).abs() < 1e-9,
            "gradient 0.5: {slow}"
        );
        let slower = Gradient::next_limit(100.0, ms(10), 0.25, ms(100));
        assert!((slower - slow).abs() < 1e-9, "clamped at 0.5: {slower}");
        let fast = Gradient::next_limit(100.0, ms(10), 0.25, ms(5));
        assert!(
            (fast - (200.0 + 200f64.sqrt())).abs() < 1e-9,
            "clamped at 2: {fast}"
        );
    }

    #[test]
    fn gradient_measures_min_rtt_then_follows_latency() {
        let ms = Duration::from_millis;
        let mut now = Instant::now();
        let mut gradient = Gradient::new()
            .with_initial(20)
            .with_min_rtt_measure(2, 5)
            .with_seed(1);
        assert_eq!(gradient.limit(), 2, "measuring min RTT at 2 in flight");
        let at = |now: Instant, latency_ms: u64| Sample {
            started: now,
            latency: ms(latency_ms),
            in_flight: 20,
            dropped: false,
        };
        for latency in [100, 110, 90, 100, 120] {
            gradient.update(&at(now, latency), now);
        }
        assert_eq!(gradient.min_rtt(), Some(ms(100)));
        assert_eq!(gradient.limit(), 20, "back to the limit it had");
        // An interval at the ideal latency: 20 × 1.25 = 25, + 5 = 30.
        now += ms(1000);
        gradient.update(&at(now, 100), now);
        assert_eq!(gradient.limit(), 30);
        // An interval twice as slow as min RTT + buffer: halved, + √15.
        for latency in [250, 260, 240] {
            now += ms(400);
            gradient.update(&at(now, latency), now);
        }
        assert_eq!(gradient.limit(), (15.0 + 15f64.sqrt()) as usize);
        // An interval with a drop: the worst gradient.
        let before = gradient.limit;
        now += ms(1100);
        gradient.update(
            &Sample {
                dropped: true,
                ..at(now, 0)
            },
            now,
        );
        let expected = before * 0.5 + (before * 0.5).sqrt();
        assert_eq!(gradient.limit(), expected as usize);
        // An interval at the ideal latency with one call in flight: no growth.
        let idle = gradient.limit();
        now += ms(1100);
        gradient.update(
            &Sample {
                in_flight: 1,
                ..at(now, 100)
            },
            now,
        );
        assert_eq!(gradient.limit(), idle, "a limit not in use does not grow");
    }
}
