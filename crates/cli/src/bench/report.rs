//! What a `tollgate bench` run came to: counts, throughput and latency percentiles, as JSON or
//! as a summary.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::Args;

/// A start later than this after its slot is late.
const LATE: Duration = Duration::from_millis(2);

/// Latency percentiles, in milliseconds.
#[derive(Debug, Default, serde::Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        // Nearest rank: the smallest sample at or above p % of them.
        let rank = |p: f64| {
            let index = (p / 100.0 * samples.len() as f64).ceil() as usize;
            ms(samples[index.clamp(1, samples.len()) - 1])
        };
        let total: Duration = samples.iter().sum();
        Self {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: ms(samples[samples.len() - 1]),
            mean: ms(total / u32::try_from(samples.len()).unwrap_or(u32::MAX)),
        }
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// What a run came to.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    target: String,
    path: String,
    through_stack: bool,
    rps: f64,
    duration_s: f64,
    concurrency: usize,
    /// Requests scheduled (and sent).
    requests: u64,
    /// Requests answered with a status, whatever it was.
    responses: u64,
    /// Requests that got no response (timeout, connection error, refused by the stack).
    failed: u64,
    /// Requests that started more than 2 ms after their slot.
    late_starts: u64,
    max_start_delay_ms: f64,
    /// From the first slot to the last response.
    elapsed_s: f64,
    /// Responses per second over `elapsed_s`.
    throughput_rps: f64,
    /// Responses by status code.
    statuses: BTreeMap<u16, u64>,
    /// Failures by kind (`timeout`, `upstream_unreachable`, `circuit_open`, ...).
    errors: BTreeMap<&'static str, u64>,
    /// Of the responses, from the scheduled start to the last byte.
    latency_ms: Percentiles,
    /// Of the responses, from the actual send to the last byte.
    service_time_ms: Percentiles,
}

/// One request's times and result.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) scheduled: Instant,
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
    pub(crate) result: Result<StatusCode, &'static str>,
}

pub(crate) fn report(args: &Args, samples: &[Sample], start: Instant) -> Report {
    let end = samples.iter().map(|s| s.finished).max().unwrap_or(start);
    let elapsed = end.saturating_duration_since(start);
    let mut statuses = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let (mut latency, mut service) = (Vec::new(), Vec::new());
    for sample in samples {
        match sample.result {
            Ok(status) => {
                *statuses.entry(status.as_u16()).or_insert(0) += 1;
                latency.push(sample.finished - sample.scheduled);
                service.push(sample.finished - sample.started);
            }
            Err(kind) => *errors.entry(kind).or_insert(0) += 1,
        }
    }
    let delays = samples
        .iter()
        .map(|s| s.started.saturating_duration_since(s.scheduled));
    let responses = latency.len() as u64;
    Report {
        target: args.target.clone(),
        path: args.path.clone(),
        through_stack: args.through_stack,
        rps: args.rps,
        duration_s: args.duration.as_secs_f64(),
        concurrency: args.concurrency,
        requests: samples.len() as u64,
        responses,
        failed: samples.len() as u64 - responses,
        late_starts: delays.clone().filter(|d| *d > LATE).count() as u64,
        max_start_delay_ms: ms(delays.max().unwrap_or_default()),
        elapsed_s: (elapsed.as_secs_f64() * 1e3).round() / 1e3,
        throughput_rps: if elapsed.is_zero() {
            0.0
        } else {
            (responses as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0
        },
        statuses,
        errors,
        latency_ms: Percentiles::of(latency),
        service_time_ms: Percentiles::of(service),
    }
}

pub(crate) fn summary(r: &Report) -> String {
    let counts = |map: Vec<(String, u64)>| {
        if map.is_empty() {
            "none".to_owned()
        } else {
            map.iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let percentiles = |p: &Percentiles| {
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            p.p50, p.p90, p.p99, p.max
        )
    };
    format!(
        "tollgate bench: {} rps for {} s (open loop, at most {} in flight) to {}{}{}\n\
         requests      {} ({} started late; max start delay {:.3} ms)\n\
         responses     {} in {:.3} s: {:.1}/s\n\
         statuses      {}\n\
         failed        {}\n\
         latency       {}  (from the scheduled start)\n\
         service time  {}  (from the send)",
        r.rps,
        r.duration_s,
        r.concurrency,
        r.target.trim_end_matches('/'),
        r.path,
        if r.through_stack {
            " through the stack"
        } else {
            ""
        },
        r.requests,
        r.late_starts,
        r.max_start_delay_ms,
        r.responses,
        r.elapsed_s,
        r.throughput_rps,
        counts(
            r.statuses
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect()
        ),
        counts(
            r.errors
                .iter()
                .map(|(k, n)| ((*k).to_owned(), *n))
                .collect()
        ),
        percentiles(&r.latency_ms),
        percentiles(&r.service_time_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(p.mean, 50.5);
        let one = Percentiles::of(vec![Duration::from_micros(1500)]);
        assert_eq!((one.p50, one.p99, one.max), (1.5, 1.5, 1.5));
        assert_eq!(Percentiles::of(Vec::new()).max, 0.0);
    }
}
