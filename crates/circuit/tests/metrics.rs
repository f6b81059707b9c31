//! With the `metrics` feature each circuit reports its state as a gauge, counts its transitions
//! and the calls it refused, labelled by provider and model only.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig};
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{CredentialId, EndpointKind, LlmRequest, Provider};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_circuit_"])
}

const SECRET: &str = "sk-circuit-metrics-secret";

fn request() -> Request<()> {
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.model = Some("gpt-4o".into());
    llm.credential = Some(CredentialId::from_secret(SECRET.as_bytes()));
    let mut request = Request::new(());
    request.extensions_mut().insert(llm);
    request
}

#[tokio::test(start_paused = true)]
async fn state_gauge_transitions_and_refusals() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let status = Arc::new(Mutex::new(500));
    let answers = status.clone();
    let upstream = service_fn(move |_: Request<()>| {
        let status = *answers.lock().unwrap();
        async move {
            let response = Response::builder().status(status);
            Ok::<_, Infallible>(response.body(Full::new(Bytes::from("{}"))).unwrap())
        }
    });
    let config = CircuitConfig {
        consecutive_failures: Some(2),
        failure_rate: None,
        open_duration: Duration::from_secs(10),
        jitter: 0.0,
        half_open_probes: 1,
        ..CircuitConfig::default()
    };
    let layer = CircuitBreakerLayer::new(config).unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(upstream);
    let call = || service.clone().oneshot(request());

    // Two 500s in a row trip it; the next call is refused.
    for _ in 0..2 {
        assert_eq!(call().await.unwrap().status(), 500);
    }
    assert!(call().await.is_err());
    let scope = "model=gpt-4o,provider=openai";
    let transition = |from: &str, reason: &str, to: &str| {
        format!("tollgate_circuit_transitions_total{{from={from},{scope},reason={reason},to={to}}}")
    };
    let expected = BTreeMap::from([
        (
            format!("tollgate_circuit_state{{{scope}}}"),
            "gauge 1".to_owned(),
        ),
        (
            format!("tollgate_circuit_rejected_total{{{scope}}}"),
            "counter 1".to_owned(),
        ),
        (
            transition("closed", "consecutive_failures", "open"),
            "counter 1".to_owned(),
        ),
    ]);
    assert_eq!(recorded(&snapshotter), expected);

    // After the open period one probe passes, succeeds (when its body ends) and closes it.
    // Counters restart from zero at each snapshot.
    tokio::time::advance(Duration::from_secs(10)).await;
    *status.lock().unwrap() = 200;
    let probe = call().await.unwrap();
    probe.into_body().collect().await.unwrap();
    let state = format!("tollgate_circuit_state{{{scope}}}");
    let rejected = format!("tollgate_circuit_rejected_total{{{scope}}}");
    let tripped = transition("closed", "consecutive_failures", "open");
    let mut expected = BTreeMap::from([
        (state.clone(), "gauge 0".to_owned()),
        (rejected.clone(), "counter 0".to_owned()),
        (tripped.clone(), "counter 0".to_owned()),
        (
            transition("open", "open_period_over", "half_open"),
            "counter 1".to_owned(),
        ),
        (
            transition("half_open", "probes_succeeded", "closed"),
            "counter 1".to_owned(),
        ),
    ]);
    assert_eq!(recorded(&snapshotter), expected);

    // Forced open by hand: open, and refusing.
    let llm = request().extensions().get::<LlmRequest>().unwrap().scope();
    handle.force_open(&llm);
    assert!(call().await.is_err());
    for value in expected.values_mut() {
        *value = "counter 0".to_owned();
    }
    expected.insert(state, "gauge 1".to_owned());
    expected.insert(rejected, "counter 1".to_owned());
    expected.insert(
        transition("closed", "manual", "forced_open"),
        "counter 1".to_owned(),
    );
    let recorded = recorded(&snapshotter);
    assert_eq!(recorded, expected);
    tollgate_testkit::metrics::assert_no_credential(&recorded, SECRET);
}
