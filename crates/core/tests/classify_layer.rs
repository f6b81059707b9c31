//! ClassifyLayer and ObservedBody: outcomes and snapshots in the extensions, error bodies
//! handed over unchanged, and end-of-stream reports exactly once however the body ends.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tollgate_core::body::{EndOfStream, EndReason, ObservedBody, StreamEnd};
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{
    EndpointKind, LlmRequest, Outcome, OutcomeKind, Provider, RateLimitDimension,
    RateLimitSnapshot, Usage,
};
use tower::{Layer, ServiceExt, service_fn};

/// A body that yields the given frames (or errors) one per poll.
struct Scripted(VecDeque<Result<Frame<Bytes>, io::Error>>);

impl Scripted {
    fn chunks(chunks: &[&str]) -> Self {
        Self(
            chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c.as_bytes()))))
                .collect(),
        )
    }

    fn then_error(mut self, kind: io::ErrorKind) -> Self {
        self.0.push_back(Err(io::Error::from(kind)));
        self
    }
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front())
    }
}

async fn classify(response: Response<Scripted>) -> Response<ObservedBody<Scripted>> {
    classify_with(
        response,
        LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions),
    )
    .await
}

async fn classify_with(
    response: Response<Scripted>,
    llm: LlmRequest,
) -> Response<ObservedBody<Scripted>> {
    let response = Mutex::new(Some(response));
    let inner = service_fn(move |_: Request<()>| {
        let response = response.lock().unwrap().take().unwrap();
        async move { Ok::<_, io::Error>(response) }
    });
    let mut request = Request::new(());
    request.extensions_mut().insert(llm);
    ClassifyLayer::new()
        .layer(inner)
        .oneshot(request)
        .await
        .unwrap()
}

/// Registers a hook that records every report it gets.
fn record(response: &Response<ObservedBody<Scripted>>) -> Arc<Mutex<Vec<StreamEnd>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    response
        .extensions()
        .get::<EndOfStream>()
        .expect("every classified response has an EndOfStream")
        .on_end(move |end| sink.lock().unwrap().push(end.clone()));
    seen
}

fn one(seen: &Mutex<Vec<StreamEnd>>) -> StreamEnd {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "exactly one report: {seen:?}");
    seen[0].clone()
}

#[tokio::test(start_paused = true)]
async fn success_carries_outcome_snapshot_and_usage_at_the_end() {
    let json = r#"{"id":"c","choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
    let (first, second) = json.split_at(40);
    let response = Response::builder()
        .header("content-type", "application/json")
        .header("x-ratelimit-limit-requests", "5000")
        .header("x-ratelimit-remaining-requests", "4999")
        .header("x-ratelimit-reset-requests", "12ms")
        .body(Scripted::chunks(&[first, second]))
        .unwrap();
    let before = tokio::time::Instant::now();
    let response = classify(response).await;
    assert_eq!(
        response.extensions().get::<Outcome>().unwrap().kind,
        OutcomeKind::Success
    );
    let snapshot = response.extensions().get::<RateLimitSnapshot>().unwrap();
    let requests = snapshot.requests.expect("requests window");
    assert_eq!(
        (requests.limit, requests.remaining),
        (Some(5000), Some(4999))
    );
    assert_eq!(requests.reset, Some(Duration::from_millis(12)));
    assert_eq!(snapshot.sent_at, Some(before));

    let seen = record(&response);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, json.as_bytes());
    let end = one(&seen);
    assert_eq!(end.reason, EndReason::Complete);
    assert_eq!(end.usage, Some(Usage::new(9, 2)));
    assert_eq!(end.error, None);
    assert_eq!(end.bytes, json.len() as u64);
}

#[tokio::test]
async fn error_bodies_are_peeked_and_handed_over_unchanged() {
    let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(50);
    let response = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("content-type", "application/json")
        .body(Scripted::chunks(&[a, b, c]))
        .unwrap();
    let response = classify(response).await;
    let outcome = response.extensions().get::<Outcome>().unwrap().clone();
    assert_eq!(outcome.kind, OutcomeKind::QuotaExhausted);
    assert_eq!(outcome.status, Some(StatusCode::TOO_MANY_REQUESTS));
    let seen = record(&response);
    let read = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(read, body.as_bytes());
    assert_eq!(one(&seen).reason, EndReason::Complete);
}

#[tokio::test]
async fn a_long_error_body_is_peeked_only_up_to_the_limit() {
    let message = "x".repeat(200);
    let chunks: Vec<String> = (0..10).map(|i| format!("{i}{message}")).collect();
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let response = Response::builder()
        .status(StatusCode::from_u16(529).unwrap())
        .body(Scripted::chunks(&refs))
        .unwrap();
    let inner_response = Mutex::new(Some(response));
    let inner = service_fn(move |_: Request<()>| {
        let response = inner_response.lock().unwrap().take().unwrap();
        async move { Ok::<_, io::Error>(response) }
    });
    let response = ClassifyLayer::new()
        .with_peek_limit(300)
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(
        response.extensions().get::<Outcome>().unwrap().kind,
        OutcomeKind::Overloaded
    );
    let read = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(read, chunks.concat().as_bytes());
}

#[tokio::test]
async fn a_broken_error_body_replays_the_prefix_then_the_error() {
    let response = Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .body(Scripted::chunks(&["partial "]).then_error(io::ErrorKind::ConnectionReset))
        .unwrap();
    let response = classify(response).await;
    assert_eq!(
        response.extensions().get::<Outcome>().unwrap().kind,
        OutcomeKind::Overloaded
    );
    let seen = record(&response);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "partial ");
    let error = body.frame().await.unwrap().unwrap_err();
    assert_eq!(
        error.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::ConnectionReset
    );
    let end = one(&seen);
    assert_eq!(end.reason, EndReason::Failed);
    assert_eq!(end.error.map(|o| o.kind), Some(OutcomeKind::ConnectionLost));
    drop(body);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "dropping after the end reports nothing more"
    );
}

#[tokio::test]
async fn an_sse_error_after_a_200_is_reported_at_the_end() {
    let stream = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel",
        "lo\"}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    ];
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .body(Scripted::chunks(&stream))
        .unwrap();
    let llm = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
    let response = classify_with(response, llm).await;
    assert!(response.extensions().get::<Outcome>().unwrap().is_success());
    let seen = record(&response);
    response.into_body().collect().await.unwrap();
    let end = one(&seen);
    assert_eq!(end.reason, EndReason::Complete);
    assert_eq!(end.error.map(|o| o.kind), Some(OutcomeKind::Overloaded));
    assert_eq!(end.usage.map(|u| u.input_tokens), Some(25));
}

#[tokio::test]
async fn dropping_the_body_early_reports_dropped() {
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .body(Scripted::chunks(&[
            "data: {\"choices\":[]}\n\n",
            "data: [DONE]\n\n",
        ]))
        .unwrap();
    let response = classify(response).await;
    let seen = record(&response);
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reported mid-stream"
    );
    drop(body);
    assert_eq!(one(&seen).reason, EndReason::Dropped);
}

#[tokio::test]
async fn a_hook_registered_after_the_end_runs_at_once() {
    let response = classify(Response::new(Scripted::chunks(&["{}"]))).await;
    let end = response.extensions().get::<EndOfStream>().unwrap().clone();
    response.into_body().collect().await.unwrap();
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    end.on_end(move |e| *sink.lock().unwrap() = Some(e.reason));
    assert_eq!(*seen.lock().unwrap(), Some(EndReason::Complete));
    assert_eq!(end.ended().map(|e| e.reason), Some(EndReason::Complete));
}

#[tokio::test]
async fn an_empty_body_that_is_never_polled_still_completes() {
    let inner = service_fn(|_: Request<()>| async {
        Ok::<_, io::Error>(Response::new(http_body_util::Empty::<Bytes>::new()))
    });
    let response = ClassifyLayer::new()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    let end = response.extensions().get::<EndOfStream>().unwrap().clone();
    assert!(response.body().is_end_stream());
    drop(response);
    assert_eq!(end.ended().map(|e| e.reason), Some(EndReason::Complete));
}

#[tokio::test]
async fn transport_errors_pass_through_unchanged() {
    let inner = service_fn(|_: Request<()>| async {
        Err::<Response<Scripted>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
    });
    let error = ClassifyLayer::new()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(
        tollgate_core::classify::classify_error(&error).kind,
        OutcomeKind::ConnectError
    );
}

#[tokio::test]
async fn a_429_names_its_dimension_and_wait() {
    let body = r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let response = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .body(Scripted::chunks(&[body]))
        .unwrap();
    let outcome = classify(response)
        .await
        .extensions()
        .get::<Outcome>()
        .unwrap()
        .clone();
    assert_eq!(
        outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::Requests)
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(20)));
    assert!(outcome.is_retryable());
}

/// Polls a future that never waits (every body here is scripted and ready).
fn now_or_never<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("scripted services never wait"),
    }
}

/// What the end-of-stream hook reports for `stream` cut at `cuts`, read through the layer.
fn end_of(stream: &[u8], cuts: &[proptest::sample::Index]) -> StreamEnd {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut frames = VecDeque::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        frames.push_back(Ok(Frame::data(Bytes::copy_from_slice(&stream[start..cut]))));
        start = cut;
    }
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .body(Scripted(frames))
        .unwrap();
    let response = now_or_never(classify(response));
    let seen = record(&response);
    now_or_never(response.into_body().collect()).unwrap();
    one(&seen)
}

const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
    "data: [DONE]\n\n",
);

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":472,\"cache_read_input_tokens\":100,\"output_tokens\":2}}}\r\n\r\n",
    "event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n",
    "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage: \\\"usage\\\"\"}}\r\n\r\n",
    "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":89}}\r\n\r\n",
    "event: error\r\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\r\n\r\n",
);

proptest::proptest! {
    #[test]
    fn every_chunking_of_a_stream_reports_the_same_end(
        cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..40),
    ) {
        let openai = end_of(OPENAI_STREAM.as_bytes(), &cuts);
        let mut want = Usage::new(12, 3);
        want.cache_read_input_tokens = 4;
        proptest::prop_assert_eq!(openai.usage, Some(want));
        proptest::prop_assert_eq!(openai.error, None);
        proptest::prop_assert_eq!(openai.bytes, OPENAI_STREAM.len() as u64);

        let anthropic = end_of(ANTHROPIC_STREAM.as_bytes(), &cuts);
        let mut want = Usage::new(572, 89);
        want.cache_read_input_tokens = 100;
        proptest::prop_assert_eq!(anthropic.usage, Some(want));
        proptest::prop_assert_eq!(anthropic.error.map(|o| o.kind), Some(OutcomeKind::Overloaded));
        proptest::prop_assert_eq!(anthropic.reason, EndReason::Complete);
    }
}
