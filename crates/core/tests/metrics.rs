//! With the `metrics` feature, `Classify` counts every upstream call by outcome and times it,
//! labelled by provider and model only: never the credential.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{EndpointKind, LlmRequest, Provider};
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
        // A 200 stream that fails part way, as Anthropic's do when overloaded.
        "/v1/messages" => (
            StatusCode::OK,
            "event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
             event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ),
        "/v1/embeddings" => (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":{"message":"Rate limit reached on requests per min (RPM)","type":"requests","code":"rate_limit_exceeded"}}"#,
        ),
        _ => return Err(io::Error::from(io::ErrorKind::ConnectionReset)),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if request.uri().path() == "/v1/messages" {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
    }
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
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // A success is counted when its body has been read to the end.
        response.into_body().collect().await.unwrap();
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
    tollgate_testkit::metrics::assert_no_credential(&recorded, SECRET);
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
    let answer = service.clone().oneshot(annotated).await.unwrap();
    answer.into_body().collect().await.unwrap();
    let answer = service
        .oneshot(request("/v1/chat/completions", "m"))
        .await
        .unwrap();
    answer.into_body().collect().await.unwrap();

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

#[tokio::test(start_paused = true)]
async fn a_success_is_counted_by_how_its_body_ends() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(ClassifyLayer::new())
        .service(service_fn(upstream));
    let mut stream = request("/v1/messages", "claude-sonnet-4-5");
    *stream.uri_mut() = "https://api.anthropic.com/v1/messages".parse().unwrap();
    let response = stack.clone().oneshot(stream).await.unwrap();
    assert_eq!(response.status(), 200);
    // Timed at the head, but not counted until the body ends: then the error event decides.
    assert_eq!(
        recorded(&snapshotter),
        expect(&[(
            "tollgate_request_duration_seconds{model=claude-sonnet-4-5,provider=anthropic}",
            "histogram [0.25]"
        )])
    );
    response.into_body().collect().await.unwrap();

    // A caller who drops a 200 unread.
    let unread = stack
        .clone()
        .oneshot(request("/v1/chat/completions", "gpt-4o"))
        .await
        .unwrap();
    drop(unread);

    // (A snapshot drains histograms: the stream's duration was read above.)
    assert_eq!(
        recorded(&snapshotter),
        expect(&[
            (
                "tollgate_request_duration_seconds{model=claude-sonnet-4-5,provider=anthropic}",
                "histogram []"
            ),
            (
                "tollgate_request_duration_seconds{model=gpt-4o,provider=openai}",
                "histogram [0.25]"
            ),
            (
                "tollgate_requests_total{model=claude-sonnet-4-5,outcome=overloaded,provider=anthropic}",
                "counter 1"
            ),
            (
                "tollgate_requests_total{model=gpt-4o,outcome=cancelled,provider=openai}",
                "counter 1"
            ),
        ])
    );
}
