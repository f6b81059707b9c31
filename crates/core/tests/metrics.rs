//! With the `metrics` feature, `Classify` counts every upstream call by outcome and times it,
//! labelled by provider and model only: never the credential.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{CredentialId, EndpointKind, LlmRequest, Provider};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(
        snapshotter,
        &[
            "tollgate_requests_total",
            "tollgate_request_duration_seconds",
        ],
    )
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

const SECRET: &str = "sk-proj-metrics-test-secret-0123456789";

/// Answers by the request's path, after 250 ms of (paused) time.
async fn upstream(request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, io::Error> {
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (status, body) = match request.uri().path() {
        "/v1/chat/completions" => (StatusCode::OK, "{}"),
        "/v1/embeddings" => (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":{"message":"Rate limit reached on requests per min (RPM)","type":"requests","code":"rate_limit_exceeded"}}"#,
        ),
        _ => return Err(io::Error::from(io::ErrorKind::ConnectionReset)),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

fn request(path: &str, model: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://api.openai.com{path}"))
        .header("authorization", format!("Bearer {SECRET}"))
        .body(Full::new(Bytes::from(format!(
            r#"{{"model":"{model}","input":"hi"}}"#
        ))))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn classify_counts_outcomes_and_times_calls_per_provider_and_model() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(ClassifyLayer::new())
        .service(service_fn(upstream));
    for _ in 0..2 {
        let response = stack
            .clone()
            .oneshot(request("/v1/chat/completions", "gpt-4o"))
            .await;
        assert_eq!(response.unwrap().status(), 200);
    }
    let response = stack
        .clone()
        .oneshot(request("/v1/embeddings", "text-embedding-3-small"));
    assert_eq!(response.await.unwrap().status(), 429);
    let error = stack.clone().oneshot(request("/v1/broken", "gpt-4o")).await;
    assert!(error.is_err());

    let recorded = recorded(&snapshotter);
    assert_eq!(
        recorded,
        expect(&[
            (
                "tollgate_request_duration_seconds{model=gpt-4o,provider=openai}",
                "histogram [0.25, 0.25, 0.25]"
            ),
            (
                "tollgate_request_duration_seconds{model=text-embedding-3-small,provider=openai}",
                "histogram [0.25]"
            ),
            (
                "tollgate_requests_total{model=gpt-4o,outcome=success,provider=openai}",
                "counter 2"
            ),
            (
                "tollgate_requests_total{model=gpt-4o,outcome=transport_error,provider=openai}",
                "counter 1"
            ),
            (
                "tollgate_requests_total{model=text-embedding-3-small,outcome=rate_limited,provider=openai}",
                "counter 1"
            ),
        ])
    );
    // The credential id of the secret is in the scope, but never in a label.
    let id = CredentialId::from_secret(SECRET.as_bytes());
    for key in recorded.keys() {
        assert!(!key.contains(SECRET) && !key.contains(id.as_str()), "{key}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_without_an_annotation_is_labelled_unknown() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let service = ClassifyLayer::new().layer(service_fn(upstream));
    let mut annotated = request("/v1/chat/completions", "m");
    annotated
        .extensions_mut()
        .insert(LlmRequest::new(Provider::Anthropic, EndpointKind::Messages));
    service.clone().oneshot(annotated).await.unwrap();
    service
        .oneshot(request("/v1/chat/completions", "m"))
        .await
        .unwrap();

    assert_eq!(
        recorded(&snapshotter),
        expect(&[
            (
                "tollgate_request_duration_seconds{model=-,provider=anthropic}",
                "histogram [0.25]"
            ),
            (
                "tollgate_request_duration_seconds{model=-,provider=unknown}",
                "histogram [0.25]"
            ),
            (
                "tollgate_requests_total{model=-,outcome=success,provider=anthropic}",
                "counter 1"
            ),
            (
                "tollgate_requests_total{model=-,outcome=success,provider=unknown}",
                "counter 1"
            ),
        ])
    );
}
