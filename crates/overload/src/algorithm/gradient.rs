//! [`Gradient`]: Envoy's gradient controller, for upstreams that queue.

use std::time::Duration;

use rand::RngExt as _;
use tokio::time::Instant;
use tollgate_core::rng::{self, Rng};

use super::{LimitAlgorithm, Sample};

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
/// halving; [`Aimd`](super::Aimd) is the better fit there (see `docs/overload-limit.svg`). Gradient suits
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
