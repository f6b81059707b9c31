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

use std::collections::BTreeMap;

use metrics::{counter, describe_counter, describe_histogram, histogram};
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
const CIRCUIT_HELP: &str =
    "The breakers of each scope (provider, credential id, model): how many are in each state.";
const OVERLOAD_HELP: &str = "The overload detectors of each scope: how many are in each state.";
const LIMIT_HELP: &str = "The (adaptive) concurrency limit of each scope.";
const IN_FLIGHT_HELP: &str = "Calls in flight per scope (a stream until its last byte).";

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
        let mut text = self.handle.render();
        write_scope_gauges(&mut text, scopes);
        text
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

/// One series' labels: provider, credential id, model label.
type ScopeKey = (&'static str, String, String);

/// The state of the scopes that share one set of labels (one scope, or every scope whose model
/// is labelled `other`).
#[derive(Default)]
struct ScopeSums {
    circuit: [u64; CIRCUIT_STATES.len()],
    overload: [u64; OVERLOAD_STATES.len()],
    limit: u64,
    in_flight: u64,
}

/// Appends the stack's state per scope to `text`: breaker and overload state (one series per
/// state: how many of the scopes behind the labels are in it, so 1 or 0 for one scope),
/// concurrency limit and calls in flight (summed). Rendered from the scopes as they are now,
/// not kept in the recorder, so a scope the stack has forgotten leaves no series behind. The
/// credential label is the credential's id (a digest prefix), never the key; the model label
/// follows the process's model-label policy.
fn write_scope_gauges(text: &mut String, scopes: &[ScopeHealth]) {
    use std::fmt::Write as _;
    let labels = tollgate_core::model_labels::model_labels();
    let mut sums: BTreeMap<ScopeKey, ScopeSums> = BTreeMap::new();
    for s in scopes {
        let key = (
            s.scope.provider().as_str(),
            s.scope
                .credential()
                .map_or_else(String::new, |c| c.as_str().to_owned()),
            s.scope.model().map_or("", |m| labels.label(m)).to_owned(),
        );
        let sum = sums.entry(key).or_default();
        for (i, state) in CIRCUIT_STATES.iter().enumerate() {
            sum.circuit[i] += u64::from(*state == s.circuit);
        }
        for (i, state) in OVERLOAD_STATES.iter().enumerate() {
            sum.overload[i] += u64::from(*state == s.overload);
        }
        sum.limit += s.limit as u64;
        sum.in_flight += s.in_flight as u64;
    }
    let labels = |(provider, credential, model): &ScopeKey| {
        format!(
            "provider=\"{provider}\",credential=\"{}\",model=\"{}\"",
            escape(credential),
            escape(model)
        )
    };
    let family = |text: &mut String, name: &str, help: &str| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    family(text, CIRCUIT_STATE, CIRCUIT_HELP);
    for (key, sum) in &sums {
        for (state, n) in CIRCUIT_STATES.iter().zip(sum.circuit) {
            let _ = writeln!(
                text,
                "{CIRCUIT_STATE}{{{},state=\"{}\"}} {n}",
                labels(key),
                state.as_str()
            );
        }
    }
    family(text, OVERLOAD_STATE, OVERLOAD_HELP);
    for (key, sum) in &sums {
        for (state, n) in OVERLOAD_STATES.iter().zip(sum.overload) {
            let _ = writeln!(
                text,
                "{OVERLOAD_STATE}{{{},state=\"{}\"}} {n}",
                labels(key),
                state.as_str()
            );
        }
    }
    family(text, LIMIT, LIMIT_HELP);
    for (key, sum) in &sums {
        let _ = writeln!(text, "{LIMIT}{{{}}} {}", labels(key), sum.limit);
    }
    family(text, IN_FLIGHT, IN_FLIGHT_HELP);
    for (key, sum) in &sums {
        let _ = writeln!(text, "{IN_FLIGHT}{{{}}} {}", labels(key), sum.in_flight);
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
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
