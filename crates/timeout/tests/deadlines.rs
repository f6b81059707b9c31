//! Every deadline of `TimeoutLayer` under paused time, against a scripted upstream: the time to
//! first byte (headers, then a stream's first data), the idle limit with a stream that stalls
//! after some chunks, the total that grows with `max_tokens`, the request's `Deadline` when it
//! is sooner, a request's own `Timeouts`, and what the layers that wait for the end of a stream
//! see when one is cut off.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitHandle, CircuitState};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::{EndOfStream, EndReason, ObservedBody};
use tollgate_core::classify::{ClassifyLayer, classify_error};
use tollgate_core::{BoxError, Deadline, OutcomeKind, Provider, Scope};
use tollgate_timeout::error::{FirstByteTimeout, IdleTimeout, Limit, TotalTimeout};
use tollgate_timeout::{TimeoutBody, TimeoutConfig, TimeoutLayer, Timeouts};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use common::{Answer, Ending, Script, chat, failed_with_timeout, read, read_observed, upstream};

type Stack = BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<TimeoutBody<ObservedBody<Script>>>,
    BoxError,
>;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// 10 s to the first byte, 5 s idle, a total of 30 s plus 100 ms per output token.
fn config() -> TimeoutConfig {
    TimeoutConfig {
        first_byte: Some(secs(10)),
        idle: Some(secs(5)),
        total: Some(secs(30)),
        per_output_token: Some(Duration::from_millis(100)),
        default_output_tokens: 1_000,
    }
}

/// Annotate → Timeout → Classify → the scripted upstream; and how many calls reached it.
fn stack(config: TimeoutConfig, answer: Answer) -> (Stack, Arc<AtomicUsize>) {
    let (upstream, calls) = upstream(answer);
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(TimeoutLayer::new(config).unwrap())
        .layer(ClassifyLayer::new())
        .service(upstream);
    (BoxCloneSyncService::new(service), calls)
}

/// Annotate → a breaker that opens after 2 failures in a row → Timeout → Classify → the
/// scripted upstream; the breaker's handle, and how many calls reached the upstream.
fn behind_a_breaker(answer: Answer) -> (Stack, CircuitHandle, Arc<AtomicUsize>) {
    let (upstream, calls) = upstream(answer);
    let breaker = CircuitBreakerLayer::shared(CircuitConfig {
        consecutive_failures: Some(2),
        ..CircuitConfig::default()
    })
    .unwrap();
    let health = breaker.handle();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(breaker)
        .layer(TimeoutLayer::new(config()).unwrap())
        .layer(ClassifyLayer::new())
        .service(upstream);
    (BoxCloneSyncService::new(stack), health, calls)
}

fn first_byte(error: &BoxError) -> FirstByteTimeout {
    *error
        .downcast_ref::<FirstByteTimeout>()
        .unwrap_or_else(|| panic!("a FirstByteTimeout, not {error}"))
}

#[tokio::test(start_paused = true)]
async fn headers_that_never_come_time_out_at_the_first_byte_limit() {
    let (stack, calls) = stack(config(), Answer::hang());
    let start = Instant::now();
    let error = stack.oneshot(chat(true, Some(200))).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(
        first_byte(&error),
        FirstByteTimeout {
            waited: secs(10),
            limit: Limit::FirstByte
        }
    );
    // Every layer above reads it as a timeout a retry may retry.
    let outcome = classify_error(error.as_ref());
    assert_eq!(outcome.kind, OutcomeKind::Timeout);
    assert!(outcome.is_retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_does_not_stream_waits_for_its_headers_as_long_as_its_total() {
    // 30 s + 100 ms × 200 tokens = 50 s: the whole answer is written before the headers.
    let slow_but_fine = Answer::stream(49_000, &[(0, "{\"choices\":[]}")], Ending::Finish);
    let (ok, _) = stack(config(), slow_but_fine);
    let response = ok.oneshot(chat(false, Some(200))).await.unwrap();
    let (chunks, end) = read(response.into_body()).await;
    assert!(end.is_ok());
    assert_eq!(chunks.len(), 1);

    let (stack, _) = stack(config(), Answer::hang());
    let start = Instant::now();
    let error = stack.oneshot(chat(false, Some(200))).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(50));
    assert_eq!(first_byte(&error).limit, Limit::Total);
}

#[tokio::test(start_paused = true)]
async fn the_total_scales_with_max_tokens() {
    // The same hung upstream, three output caps: 30 s + 100 ms each.
    for (max_tokens, total) in [(Some(10), 31), (Some(600), 90), (None, 130)] {
        let (stack, _) = stack(config(), Answer::hang());
        let start = Instant::now();
        let error = stack.oneshot(chat(false, max_tokens)).await.unwrap_err();
        assert_eq!(start.elapsed(), secs(total), "max_tokens {max_tokens:?}");
        assert_eq!(first_byte(&error).limit, Limit::Total);
    }
    // A streamed answer of 600 tokens at 120 ms each (72 s) is long, not slow: it finishes.
    let tokens: Vec<(u64, &'static str)> = (0..600).map(|_| (120, "data: {}\n\n")).collect();
    let (stack, _) = stack(config(), Answer::stream(100, &tokens, Ending::Finish));
    let response = stack.oneshot(chat(true, Some(600))).await.unwrap();
    let (chunks, end) = read(response.into_body()).await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(chunks.len(), 600);
}

#[tokio::test(start_paused = true)]
async fn a_stream_past_its_total_ends_with_a_total_timeout() {
    // One chunk a second from 1.5 s, never idle; 30 s + 100 ms × 100 = 40 s in all.
    let trickle: Vec<(u64, &'static str)> = (0..100).map(|_| (1_000, "data: {}\n\n")).collect();
    let (stack, _) = stack(config(), Answer::stream(500, &trickle, Ending::Finish));
    let start = Instant::now();
    let response = stack.oneshot(chat(true, Some(100))).await.unwrap();
    let (chunks, end) = read(response.into_body()).await;
    let error = end.unwrap_err();
    let total = error
        .downcast_ref::<TotalTimeout>()
        .expect("a TotalTimeout");
    assert_eq!(start.elapsed(), secs(40));
    assert_eq!(total.limit, Limit::Total);
    assert_eq!(total.elapsed, secs(40));
    assert_eq!(chunks.len(), 39, "the chunks before the end were delivered");
    assert_eq!(total.bytes, 39 * 10);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stalls_after_some_chunks_ends_with_an_idle_timeout() {
    let stalls = Answer::stream(
        200,
        &[
            (0, "data: {\"a\":1}\n\n"),
            (500, "data: {\"b\":2}\n\n"),
            (500, "data: {\"c\":3}\n\n"),
        ],
        Ending::Stall,
    );
    let (stack, _) = stack(config(), stalls);
    let start = Instant::now();
    let response = stack.oneshot(chat(true, Some(500))).await.unwrap();
    assert_eq!(response.status(), 200);
    let (chunks, result, end) = read_observed(response).await;
    // The caller got every chunk, then a typed error 5 s after the last one.
    assert_eq!(chunks.len(), 3);
    let error = result.unwrap_err();
    let idle = error.downcast_ref::<IdleTimeout>().expect("an IdleTimeout");
    assert_eq!(idle.idle, secs(5));
    assert_eq!(idle.bytes, 3 * 15);
    assert_eq!(start.elapsed(), Duration::from_millis(6_200));
    // The layers that wait for the end of the stream see a stream that failed with a timeout.
    assert_eq!(failed_with_timeout(&end).bytes, 45);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_counts_against_the_breaker_at_its_end() {
    let stalls = Answer::stream(
        0,
        &[(0, "data: {}\n\n"), (100, "data: {}\n\n")],
        Ending::Stall,
    );
    let (stack, health, calls) = behind_a_breaker(stalls);
    let scope = Scope::new(Provider::OpenAi);
    for _ in 0..2 {
        let response = stack.clone().oneshot(chat(true, Some(50))).await.unwrap();
        assert_eq!(response.status(), 200, "the headers said success");
        assert_eq!(health.state(&scope), CircuitState::Closed);
        let (_, end) = read(response.into_body()).await;
        assert!(end.unwrap_err().is::<IdleTimeout>());
    }
    // Two streams cut off by the idle limit: two failures, the circuit opens.
    assert_eq!(health.state(&scope), CircuitState::Open);
    let refused = stack
        .clone()
        .oneshot(chat(true, Some(50)))
        .await
        .unwrap_err();
    assert!(refused.is::<tollgate_core::error::CircuitOpen>());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_by_the_callers_own_deadline_is_not_held_against_the_upstream() {
    // A healthy stream, a chunk a second, that the caller's deadline cuts at 3 s.
    let trickle: Vec<(u64, &'static str)> = (0..20).map(|_| (1_000, "data: {}\n\n")).collect();
    let (stack, health, calls) = behind_a_breaker(Answer::stream(0, &trickle, Ending::Finish));
    let scope = Scope::new(Provider::OpenAi);
    for _ in 0..3 {
        let mut request = chat(true, Some(50));
        request.extensions_mut().insert(Deadline::after(secs(3)));
        let response = stack.clone().oneshot(request).await.unwrap();
        let (chunks, result, end) = read_observed(response).await;
        assert_eq!(chunks.len(), 3);
        // The caller reads why its stream stopped ...
        let error = result.unwrap_err();
        let total = error
            .downcast_ref::<TotalTimeout>()
            .expect("a TotalTimeout");
        assert_eq!(total.limit, Limit::Deadline);
        // ... and the layers that judge the upstream see a caller who gave up.
        let ended = end.ended().expect("ended");
        assert_eq!(ended.reason, EndReason::Dropped);
        assert_eq!(ended.error, None);
    }
    assert_eq!(health.state(&scope), CircuitState::Closed);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // The other order, Classify above Timeout, reads the same from the error itself.
    let (upstream, _) = common::upstream(Answer::stream(0, &trickle, Ending::Finish));
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(ClassifyLayer::new())
        .layer(TimeoutLayer::new(config()).unwrap())
        .service(upstream);
    let mut request = chat(true, Some(50));
    request.extensions_mut().insert(Deadline::after(secs(3)));
    let response = stack.oneshot(request).await.unwrap();
    let (_, result, end) = read_observed(response).await;
    assert!(result.is_err());
    let ended = end.ended().expect("ended");
    assert_eq!(ended.reason, EndReason::Dropped);
    assert_eq!(ended.error, None);
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_not_a_stalled_stream() {
    let chunks: Vec<(u64, &'static str)> = (0..5).map(|_| (100, "data: {}\n\n")).collect();
    let (stack, _) = stack(config(), Answer::stream(0, &chunks, Ending::Finish));
    let response = stack.oneshot(chat(true, Some(50))).await.unwrap();
    let mut body = response.into_body();
    let mut read_chunks = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        frame.expect("no timeout: the upstream was never silent for 5 s");
        read_chunks += 1;
        // The caller takes 8 s over each chunk, longer than the idle limit.
        tokio::time::sleep(secs(8)).await;
    }
    assert_eq!(read_chunks, 5);
}

#[tokio::test(start_paused = true)]
async fn a_stream_gets_its_first_data_within_the_first_byte_limit() {
    // Headers at once (as Anthropic sends them), then the model thinks.
    let thinking = |first_ms| Answer::stream(0, &[(first_ms, "data: {}\n\n")], Ending::Finish);
    let (stack_ok, _) = stack(config(), thinking(9_000));
    let response = stack_ok.oneshot(chat(true, Some(10))).await.unwrap();
    let (chunks, end) = read(response.into_body()).await;
    assert!(
        end.is_ok(),
        "9 s is more than idle but within the first-byte limit"
    );
    assert_eq!(chunks.len(), 1);

    let (stack_late, _) = stack(config(), thinking(11_000));
    let start = Instant::now();
    let response = stack_late.oneshot(chat(true, Some(10))).await.unwrap();
    let (chunks, end) = read(response.into_body()).await;
    assert!(chunks.is_empty());
    let error = end.unwrap_err();
    assert_eq!(
        first_byte(&error),
        FirstByteTimeout {
            waited: secs(10),
            limit: Limit::FirstByte
        }
    );
    assert_eq!(start.elapsed(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_sooner_deadline_wins_before_and_after_the_headers() {
    let (hung, _) = stack(config(), Answer::hang());
    let mut request = chat(true, Some(100));
    request.extensions_mut().insert(Deadline::after(secs(3)));
    let start = Instant::now();
    let error = hung.oneshot(request).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(3));
    assert_eq!(first_byte(&error).limit, Limit::Deadline);

    let trickle: Vec<(u64, &'static str)> = (0..100).map(|_| (1_000, "data: {}\n\n")).collect();
    let (streaming, _) = stack(config(), Answer::stream(500, &trickle, Ending::Finish));
    let mut request = chat(true, Some(100));
    request.extensions_mut().insert(Deadline::after(secs(12)));
    let start = Instant::now();
    let response = streaming.oneshot(request).await.unwrap();
    let (chunks, end) = read(response.into_body()).await;
    let error = end.unwrap_err();
    let total = error
        .downcast_ref::<TotalTimeout>()
        .expect("a TotalTimeout");
    assert_eq!(total.limit, Limit::Deadline);
    assert_eq!(start.elapsed(), secs(12));
    assert_eq!(chunks.len(), 11);

    // A later deadline changes nothing.
    let (hung, _) = stack(config(), Answer::hang());
    let mut request = chat(true, Some(100));
    request
        .extensions_mut()
        .insert(Deadline::after(secs(3_600)));
    let error = hung.oneshot(request).await.unwrap_err();
    assert_eq!(first_byte(&error).limit, Limit::FirstByte);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_passed_fails_without_calling_the_upstream() {
    let (stack, calls) = stack(config(), Answer::stream(0, &[], Ending::Finish));
    let mut request = chat(true, None);
    request.extensions_mut().insert(Deadline(Instant::now()));
    let error = stack.oneshot(request).await.unwrap_err();
    assert_eq!(
        first_byte(&error),
        FirstByteTimeout {
            waited: Duration::ZERO,
            limit: Limit::Deadline
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_can_set_its_own_limits() {
    let stalls_8s = Answer::stream(
        0,
        &[(0, "data: {}\n\n"), (8_000, "data: {}\n\n")],
        Ending::Finish,
    );

    // The layer's 5 s idle limit cuts it off...
    let (stack_default, _) = stack(config(), stalls_8s.clone());
    let response = stack_default.oneshot(chat(true, Some(10))).await.unwrap();
    let (_, end) = read(response.into_body()).await;
    assert!(end.unwrap_err().is::<IdleTimeout>());

    // ...a request that allows 10 s of silence reads it whole.
    let (stack_patient, _) = stack(config(), stalls_8s);
    let mut request = chat(true, Some(10));
    request
        .extensions_mut()
        .insert(Timeouts::new().with_idle(secs(10)));
    let response = stack_patient.oneshot(request).await.unwrap();
    let (chunks, end) = read(response.into_body()).await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(chunks.len(), 2);

    // A tighter first byte for an interactive call, and a fixed total.
    let (hung, _) = stack(config(), Answer::hang());
    let mut request = chat(true, Some(10_000));
    request.extensions_mut().insert(
        Timeouts::new()
            .with_first_byte(secs(2))
            .with_total(secs(1))
            .with_per_output_token(Duration::ZERO),
    );
    let start = Instant::now();
    let error = hung.oneshot(request).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(1));
    assert_eq!(first_byte(&error).limit, Limit::Total);
}

#[tokio::test(start_paused = true)]
async fn below_classify_the_body_observer_sees_the_timeout_error() {
    // The other order: Classify above Timeout wraps the timeout's body and reads its error.
    let stalls = Answer::stream(0, &[(0, "data: {}\n\n")], Ending::Stall);
    let (upstream, _) = upstream(stalls);
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(ClassifyLayer::new())
        .layer(TimeoutLayer::new(config()).unwrap())
        .service(upstream);
    let response = stack.oneshot(chat(true, Some(10))).await.unwrap();
    let (_, result, end) = read_observed(response).await;
    assert!(result.is_err());
    failed_with_timeout(&end);
}

#[tokio::test(start_paused = true)]
async fn a_caller_who_walks_away_is_not_a_timeout() {
    let stalls = Answer::stream(0, &[(0, "data: {}\n\n")], Ending::Stall);
    let (stack, _) = stack(config(), stalls);
    let response = stack.oneshot(chat(true, Some(10))).await.unwrap();
    let end = response
        .extensions()
        .get::<EndOfStream>()
        .cloned()
        .expect("observed");
    drop(response);
    let ended = end.ended().expect("ended");
    assert_eq!(ended.reason, EndReason::Dropped);
    assert_eq!(ended.error, None);
}
