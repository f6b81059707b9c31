//! The gateway's counters, and their Prometheus text exposition at `GET /metrics`.
//!
//! Written by hand rather than through the `metrics` crates: the set is small and fixed
//! (requests by route and status, upstream calls by status, refusals by kind, a latency
//! histogram, and the stack's per-scope state read from [`StackHandle::health`]), so plain
//! atomics indexed by route and status cost no lock, no map and no allocation per request,
//! and the binary takes no global recorder and no second HTTP server.
//!
//! [`StackHandle::health`]: tollgate::StackHandle::health

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate::ScopeHealth;
use tollgate::circuit::CircuitState;
use tollgate::overload::OverloadState;

use super::refusal::Refusal;

/// The routes counted apart; any other `/v1/...` path is `other`.
pub(crate) const ROUTES: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/responses",
    "/v1/completions",
    "other",
];

/// The route label of `path`.
pub(crate) fn route_index(path: &str) -> usize {
    ROUTES[..ROUTES.len() - 1]
        .iter()
        .position(|r| *r == path)
        .unwrap_or(ROUTES.len() - 1)
}

/// Upper bounds of the latency histogram, in seconds (time to the response head).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Statuses 100..=599 each have a slot.
const STATUSES: usize = 500;

fn status_slot(status: u16) -> usize {
    usize::from(status.clamp(100, 599) - 100)
}

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Every counter of one gateway process.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Box<[AtomicU64]>,
    latency_buckets: Box<[AtomicU64]>,
    latency_sum_micros: Box<[AtomicU64]>,
    upstream_calls: Box<[AtomicU64]>,
    upstream_errors: AtomicU64,
    refusals: Box<[AtomicU64]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: counters(ROUTES.len() * STATUSES),
            latency_buckets: counters(ROUTES.len() * (BUCKETS.len() + 1)),
            latency_sum_micros: counters(ROUTES.len()),
            upstream_calls: counters(STATUSES),
            upstream_errors: AtomicU64::new(0),
            refusals: counters(Refusal::ALL.len()),
        }
    }
}

impl Metrics {
    /// A client request to `route` answered with `status` after `elapsed` (to the head).
    pub(crate) fn request(&self, route: usize, status: u16, elapsed: Duration) {
        self.requests[route * STATUSES + status_slot(status)].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency_buckets[route * (BUCKETS.len() + 1) + bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros[route].fetch_add(micros, Ordering::Relaxed);
    }

    /// A call that reached the upstream and was answered with `status`.
    pub(crate) fn upstream_call(&self, status: u16) {
        self.upstream_calls[status_slot(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// A call that did not get a response from the upstream (connect error, reset).
    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The gateway answered for itself.
    pub(crate) fn refusal(&self, refusal: Refusal) {
        let slot = Refusal::ALL.iter().position(|r| *r == refusal).unwrap_or(0);
        self.refusals[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub(crate) fn render(&self, scopes: &[ScopeHealth]) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        header(
            &mut out,
            "tollgate_proxy_requests_total",
            "counter",
            "Client requests by route and the status answered.",
        );
        for (r, route) in ROUTES.iter().enumerate() {
            for s in 0..STATUSES {
                let n = load(&self.requests[r * STATUSES + s]);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_proxy_requests_total{{route=\"{route}\",status=\"{}\"}} {n}",
                        s + 100
                    );
                }
            }
        }
        header(
            &mut out,
            "tollgate_proxy_request_duration_seconds",
            "histogram",
            "Time from a client request to its response head (a stream's first byte).",
        );
        for (r, route) in ROUTES.iter().enumerate() {
            let slots =
                &self.latency_buckets[r * (BUCKETS.len() + 1)..(r + 1) * (BUCKETS.len() + 1)];
            let count: u64 = slots.iter().map(load).sum();
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (bound, slot) in BUCKETS.iter().zip(slots) {
                cumulative += load(slot);
                let _ = writeln!(
                    out,
                    "tollgate_proxy_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let sum = load(&self.latency_sum_micros[r]) as f64 / 1e6;
            let _ = writeln!(
                out,
                "tollgate_proxy_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}\n\
                 tollgate_proxy_request_duration_seconds_sum{{route=\"{route}\"}} {sum}\n\
                 tollgate_proxy_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        header(
            &mut out,
            "tollgate_proxy_upstream_calls_total",
            "counter",
            "Calls sent upstream (retries and merged batches included) by the status answered.",
        );
        for s in 0..STATUSES {
            let n = load(&self.upstream_calls[s]);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "tollgate_proxy_upstream_calls_total{{status=\"{}\"}} {n}",
                    s + 100
                );
            }
        }
        header(
            &mut out,
            "tollgate_proxy_upstream_errors_total",
            "counter",
            "Calls sent upstream that got no response (connect errors, resets).",
        );
        let _ = writeln!(
            out,
            "tollgate_proxy_upstream_errors_total {}",
            load(&self.upstream_errors)
        );
        header(
            &mut out,
            "tollgate_proxy_refusals_total",
            "counter",
            "Requests the gateway answered itself, by reason.",
        );
        for (refusal, n) in Refusal::ALL.iter().zip(self.refusals.iter()) {
            let _ = writeln!(
                out,
                "tollgate_proxy_refusals_total{{reason=\"{}\"}} {}",
                refusal.as_str(),
                load(n)
            );
        }
        render_scopes(&mut out, scopes);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const CIRCUIT_STATES: [CircuitState; 6] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
    CircuitState::ForcedOpen,
    CircuitState::Disabled,
    CircuitState::MetricsOnly,
];

const OVERLOAD_STATES: [OverloadState; 4] = [
    OverloadState::Normal,
    OverloadState::Warning,
    OverloadState::Critical,
    OverloadState::Recovering,
];

/// The stack's state per scope: breaker and overload state (one series per state, 1 for the
/// current one), concurrency limit, calls in flight.
fn render_scopes(out: &mut String, scopes: &[ScopeHealth]) {
    let labels: Vec<String> = scopes
        .iter()
        .map(|s| {
            format!(
                "provider=\"{}\",credential=\"{}\",model=\"{}\"",
                s.scope.provider(),
                escape(s.scope.credential().map_or("", |c| c.as_str())),
                escape(s.scope.model().unwrap_or(""))
            )
        })
        .collect();
    let circuit: Vec<_> = scopes.iter().map(|s| s.circuit.as_str()).collect();
    let overload: Vec<_> = scopes.iter().map(|s| s.overload.as_str()).collect();
    let states = [
        (
            "tollgate_scope_circuit_state",
            "The breaker of each scope (provider, credential id, model): 1 for its state.",
            CIRCUIT_STATES.map(CircuitState::as_str).to_vec(),
            circuit,
        ),
        (
            "tollgate_scope_overload_state",
            "The overload detector of each scope: 1 for its state.",
            OVERLOAD_STATES.map(OverloadState::as_str).to_vec(),
            overload,
        ),
    ];
    for (name, help, all, current) in states {
        header(out, name, "gauge", help);
        for (labels, current) in labels.iter().zip(current) {
            for state in &all {
                let on = u8::from(*state == current);
                let _ = writeln!(out, "{name}{{{labels},state=\"{state}\"}} {on}");
            }
        }
    }
    let gauges = [
        (
            "tollgate_scope_concurrency_limit",
            "The (adaptive) concurrency limit of each scope.",
            scopes.iter().map(|s| s.limit).collect::<Vec<_>>(),
        ),
        (
            "tollgate_scope_in_flight",
            "Calls in flight per scope (a stream until its last byte).",
            scopes.iter().map(|s| s.in_flight).collect(),
        ),
    ];
    for (name, help, values) in gauges {
        header(out, name, "gauge", help);
        for (labels, value) in labels.iter().zip(values) {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.request(
            route_index("/v1/chat/completions"),
            200,
            Duration::from_millis(3),
        );
        metrics.request(
            route_index("/v1/chat/completions"),
            200,
            Duration::from_millis(30),
        );
        metrics.request(route_index("/v1/models"), 429, Duration::from_micros(100));
        metrics.upstream_call(200);
        metrics.upstream_error();
        metrics.refusal(Refusal::CircuitOpen);
        let text = metrics.render(&[]);
        for line in [
            "# TYPE tollgate_proxy_requests_total counter",
            "tollgate_proxy_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
            "tollgate_proxy_requests_total{route=\"other\",status=\"429\"} 1",
            "tollgate_proxy_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.005\"} 1",
            "tollgate_proxy_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.05\"} 2",
            "tollgate_proxy_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"} 2",
            "tollgate_proxy_request_duration_seconds_sum{route=\"/v1/chat/completions\"} 0.033",
            "tollgate_proxy_upstream_calls_total{status=\"200\"} 1",
            "tollgate_proxy_upstream_errors_total 1",
            "tollgate_proxy_refusals_total{reason=\"circuit_open\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
