//! The gateway's metrics, and their Prometheus text exposition at `GET /metrics`.
//!
//! Recorded through the [`metrics`] facade into the Prometheus recorder of
//! `metrics-exporter-prometheus`, installed as the process's global recorder: so the layers of
//! the stack, which record through the same facade, show up at the same endpoint as the
//! gateway's own series (requests by route and status, upstream calls by status, refusals by
//! reason, a latency histogram). The stack's per-scope state (breaker, overload state, limit,
//! in flight) is read from [`StackHandle::health`] and set as gauges at scrape time. The
//! exporter opens no listener of its own: `GET /metrics` renders through its handle.
//!
//! [`StackHandle::health`]: tollgate::StackHandle::health

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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

/// Upper bounds of the latency histograms, in seconds: the gateway's time to the response head,
/// and every other `*_seconds` histogram the layers record.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

const REQUESTS: &str = "tollgate_proxy_requests_total";
const DURATION: &str = "tollgate_proxy_request_duration_seconds";
const UPSTREAM_CALLS: &str = "tollgate_proxy_upstream_calls_total";
const UPSTREAM_ERRORS: &str = "tollgate_proxy_upstream_errors_total";
const REFUSALS: &str = "tollgate_proxy_refusals_total";
const CIRCUIT_STATE: &str = "tollgate_scope_circuit_state";
const OVERLOAD_STATE: &str = "tollgate_scope_overload_state";
const LIMIT: &str = "tollgate_scope_concurrency_limit";
const IN_FLIGHT: &str = "tollgate_scope_in_flight";

/// The recorder's settings: `*_seconds` histograms as Prometheus histograms with [`BUCKETS`]
/// (others stay summaries).
pub(crate) fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)
        .expect("the bucket list is not empty")
}

/// Installs the Prometheus recorder as the process's global one.
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    builder()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// The gateway's series, through the facade's current recorder.
#[derive(Debug)]
pub(crate) struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Describes the series (their `# HELP`) and starts the ones a dashboard expects to see
    /// from the first scrape (refusals by reason, upstream errors) at 0.
    pub(crate) fn new(handle: PrometheusHandle) -> Self {
        describe_counter!(
            REQUESTS,
            "Client requests by route and the status answered."
        );
        describe_histogram!(
            DURATION,
            metrics::Unit::Seconds,
            "Time from a client request to its response head (a stream's first byte)."
        );
        describe_counter!(
            UPSTREAM_CALLS,
            "Calls sent upstream (retries and merged batches included) by the status answered."
        );
        describe_counter!(
            UPSTREAM_ERRORS,
            "Calls sent upstream that got no response (connect errors, TLS errors, resets)."
        );
        describe_counter!(REFUSALS, "Requests the gateway answered itself, by reason.");
        describe_gauge!(
            CIRCUIT_STATE,
            "The breaker of each scope (provider, credential id, model): 1 for its state."
        );
        describe_gauge!(
            OVERLOAD_STATE,
            "The overload detector of each scope: 1 for its state."
        );
        describe_gauge!(LIMIT, "The (adaptive) concurrency limit of each scope.");
        describe_gauge!(
            IN_FLIGHT,
            "Calls in flight per scope (a stream until its last byte)."
        );
        counter!(UPSTREAM_ERRORS).increment(0);
        for refusal in Refusal::ALL {
            counter!(REFUSALS, "reason" => refusal.as_str()).increment(0);
        }
        Self { handle }
    }

    /// Keeps the recorder's memory bounded between scrapes (drains histogram samples); the
    /// exporter's docs ask for it every few seconds.
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// A client request to `route` answered with `status` after `elapsed` (to the head).
    pub(crate) fn request(&self, route: usize, status: u16, elapsed: Duration) {
        let route = ROUTES[route];
        counter!(REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
        histogram!(DURATION, "route" => route).record(elapsed.as_secs_f64());
    }

    /// A call that reached the upstream and was answered with `status`.
    pub(crate) fn upstream_call(&self, status: u16) {
        counter!(UPSTREAM_CALLS, "status" => status.to_string()).increment(1);
    }

    /// A call that did not get a response from the upstream (connect error, reset).
    pub(crate) fn upstream_error(&self) {
        counter!(UPSTREAM_ERRORS).increment(1);
    }

    /// The gateway answered for itself.
    pub(crate) fn refusal(&self, refusal: Refusal) {
        counter!(REFUSALS, "reason" => refusal.as_str()).increment(1);
    }

    /// The Prometheus text exposition (format 0.0.4), after setting the per-scope gauges from
    /// `scopes`.
    pub(crate) fn render(&self, scopes: &[ScopeHealth]) -> String {
        set_scope_gauges(scopes);
        self.handle.render()
    }
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
/// current one), concurrency limit, calls in flight. The credential label is the credential's
/// id (a digest prefix), never the key.
fn set_scope_gauges(scopes: &[ScopeHealth]) {
    for s in scopes {
        let labels = [
            ("provider", s.scope.provider().as_str().to_owned()),
            (
                "credential",
                s.scope
                    .credential()
                    .map_or_else(String::new, |c| c.as_str().to_owned()),
            ),
            ("model", s.scope.model().unwrap_or("").to_owned()),
        ];
        let with_state = |state: &'static str| {
            let mut labels = labels.to_vec();
            labels.push(("state", state.to_owned()));
            labels
        };
        for state in CIRCUIT_STATES {
            gauge!(CIRCUIT_STATE, &with_state(state.as_str()))
                .set(f64::from(u8::from(state == s.circuit)));
        }
        for state in OVERLOAD_STATES {
            gauge!(OVERLOAD_STATE, &with_state(state.as_str()))
                .set(f64::from(u8::from(state == s.overload)));
        }
        gauge!(LIMIT, &labels).set(s.limit as f64);
        gauge!(IN_FLIGHT, &labels).set(s.in_flight as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        let text = metrics::with_local_recorder(&recorder, || {
            let metrics = Metrics::new(handle);
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
            metrics.render(&[])
        });
        for line in [
            "# TYPE tollgate_proxy_requests_total counter",
            "# HELP tollgate_proxy_requests_total Client requests by route and the status answered.",
            "tollgate_proxy_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
            "tollgate_proxy_requests_total{route=\"other\",status=\"429\"} 1",
            "# TYPE tollgate_proxy_request_duration_seconds histogram",
            "tollgate_proxy_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.001\"} 0",
            "tollgate_proxy_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.005\"} 1",
            "tollgate_proxy_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.05\"} 2",
            "tollgate_proxy_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"} 2",
            "tollgate_proxy_request_duration_seconds_count{route=\"/v1/chat/completions\"} 2",
            "tollgate_proxy_upstream_calls_total{status=\"200\"} 1",
            "tollgate_proxy_upstream_errors_total 1",
            "tollgate_proxy_refusals_total{reason=\"circuit_open\"} 1",
            "tollgate_proxy_refusals_total{reason=\"rate_limited\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "tollgate_proxy_request_duration_seconds_sum{route=\"/v1/chat/completions\"} ",
                )
            })
            .unwrap_or_else(|| panic!("{text}"));
        let sum: f64 = sum.parse().unwrap();
        assert!((sum - 0.033).abs() < 1e-9, "{sum}");
    }
}
