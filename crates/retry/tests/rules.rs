//! Every rule of the retry layer under paused time, against a scripted upstream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::CircuitOpen;
use tollgate_core::{BoxError, Deadline};
use tollgate_retry::{Backoff, Hedge, HedgeAfter, HedgeWhen, Retried, RetryLayer};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// One scripted answer: a response, or an error from below (a local rejection).
#[derive(Clone)]
enum Answer {
    Status(u16, Vec<(&'static str, &'static str)>, &'static str),
    Delayed(u16, Duration),
    Refused(Duration),
    /// A breaker below that an operator forced open.
    Forced,
}

fn status(code: u16) -> Answer {
    Answer::Status(code, vec![], "{}")
}

/// Delayed answers that ran to their end (a cancelled attempt never does).
static COMPLETED_DELAYED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What the upstream saw of each attempt: when, its idempotency key, where its body lives.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    key: Option<String>,
    body_ptr: usize,
}

type Stack = BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<tollgate_core::body::ObservedBody<Full<Bytes>>>,
    BoxError,
>;

fn upstream(
    layer: RetryLayer,
    script: Vec<Answer>,
    fallback: Answer,
) -> (Stack, Arc<Mutex<Vec<Seen>>>) {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let upstream = service_fn(move |request: Request<Full<Bytes>>| {
        let answer = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| fallback.clone());
        // Where the body's bytes live, read through a clone of the `Full` (it shares them).
        let body_ptr = body_bytes(request.body().clone()).as_ptr() as usize;
        log.lock().unwrap().push(Seen {
            at: Instant::now(),
            key: request
                .headers()
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap().to_owned()),
            body_ptr,
        });
        async move {
            let (code, headers, body) = match answer {
                Answer::Status(code, headers, body) => (code, headers, body),
                Answer::Delayed(code, delay) => {
                    tokio::time::sleep(delay).await;
                    COMPLETED_DELAYED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (code, vec![], "{}")
                }
                Answer::Refused(wait) => {
                    return Err::<Response<Full<Bytes>>, BoxError>(Box::new(CircuitOpen::new(
                        Some(wait),
                    )));
                }
                Answer::Forced => {
                    return Err(Box::new(CircuitOpen::forced()));
                }
            };
            let mut response = Response::builder().status(StatusCode::from_u16(code).unwrap());
            for (name, value) in headers {
                response = response.header(name, value);
            }
            Ok(response
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap())
        }
    });
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(upstream);
    (BoxCloneSyncService::new(service), seen)
}

/// The bytes of a `Full` body, without awaiting (it is ready at once).
fn body_bytes(body: Full<Bytes>) -> Bytes {
    use http_body::Body;
    let mut body = std::pin::pin!(body);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap()
}

fn exact() -> RetryLayer {
    RetryLayer::new()
        .with_backoff(Backoff::Fixed(Duration::from_secs(1)))
        .with_seed(7)
}

async fn send(stack: &Stack) -> (Result<StatusCode, BoxError>, Option<Retried>) {
    match stack.clone().oneshot(request()).await {
        Ok(response) => (
            Ok(response.status()),
            response.extensions().get::<Retried>().copied(),
        ),
        Err(error) => (Err(error), None),
    }
}

#[tokio::test(start_paused = true)]
async fn only_what_can_succeed_is_retried() {
    let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
    let cases: Vec<(Answer, usize)> = vec![
        (status(503), 5),
        (status(529), 5),
        (status(500), 5),
        (status(429), 5),
        (Answer::Status(429, vec![], quota), 1),
        (status(413), 1),
        (status(400), 1),
        (status(401), 1),
        (status(404), 1),
        (
            Answer::Status(409, vec![("x-should-retry", "true")], "{}"),
            5,
        ),
        (
            Answer::Status(503, vec![("x-should-retry", "false")], "{}"),
            1,
        ),
    ];
    for (answer, attempts) in cases {
        let (stack, seen) = upstream(exact(), vec![], answer);
        let _ = send(&stack).await;
        assert_eq!(seen.lock().unwrap().len(), attempts);
    }
}

#[tokio::test(start_paused = true)]
async fn the_provider_sets_the_wait_up_to_a_cap() {
    let (stack, seen) = upstream(
        exact(),
        vec![Answer::Status(429, vec![("retry-after", "7")], "{}")],
        status(200),
    );
    let (status_code, retried) = send(&stack).await;
    assert_eq!(status_code.unwrap(), 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(7));
    }
    assert_eq!(
        retried,
        Some(Retried {
            attempts: 2,
            waited: Duration::from_secs(7)
        })
    );

    let capped = exact().with_max_retry_after(Duration::from_secs(30));
    let (stack, seen) = upstream(
        capped,
        vec![Answer::Status(503, vec![("retry-after", "600")], "{}")],
        status(200),
    );
    let _ = send(&stack).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_circuit_open_below_says_how_long_to_wait() {
    let (stack, seen) = upstream(
        exact(),
        vec![Answer::Refused(Duration::from_secs(3))],
        status(200),
    );
    let (status_code, retried) = send(&stack).await;
    assert_eq!(status_code.unwrap(), 200);
    assert_eq!(retried.unwrap().waited, Duration::from_secs(3));
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_forced_open_is_not_waited_for() {
    let (stack, seen) = upstream(exact(), vec![Answer::Forced], status(200));
    let start = Instant::now();
    let (result, _) = send(&stack).await;
    let error = result.unwrap_err();
    assert_eq!(
        error.downcast_ref(),
        Some(&CircuitOpen::forced()),
        "{error}"
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "failed at once");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_without_a_provider_wait_and_the_patient_preset() {
    let layer = RetryLayer::patient().with_seed(3);
    let (stack, seen) = upstream(layer, vec![], status(503));
    let (status_code, retried) = send(&stack).await;
    assert_eq!(
        status_code.unwrap(),
        503,
        "the last outcome, after 5 attempts"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    for (n, pair) in seen.windows(2).enumerate() {
        let wait = (pair[1].at - pair[0].at).as_secs_f64();
        let nominal = 2f64.powi(n as i32);
        assert!(
            wait >= nominal * 0.75 && wait <= nominal * 1.25,
            "retry {}: {wait}",
            n + 1
        );
    }
    assert_eq!(retried.unwrap().attempts, 5);
}

#[tokio::test(start_paused = true)]
async fn one_deadline_across_all_attempts() {
    // Waits of 4 s each: the third wait would end past 10 s, so it stops after the third try.
    let layer = RetryLayer::new()
        .with_backoff(Backoff::Fixed(Duration::from_secs(4)))
        .with_deadline(Duration::from_secs(10));
    let (stack, seen) = upstream(layer, vec![], status(503));
    let start = Instant::now();
    let (status_code, retried) = send(&stack).await;
    assert_eq!(status_code.unwrap(), 503);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(retried.unwrap().waited, Duration::from_secs(8));
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(8),
        "no sleeping into the deadline"
    );

    // A provider wait past the deadline fails at once, with the provider's answer.
    let mut request = request();
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let (stack, seen) = upstream(
        exact(),
        vec![Answer::Status(429, vec![("retry-after", "20")], "{}")],
        status(200),
    );
    let response = stack.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_when_everything_fails() {
    let ratio = 0.2;
    let layer = exact()
        .with_budget(ratio, 1_000, 0)
        .with_backoff(Backoff::Fixed(Duration::ZERO));
    let (stack, seen) = upstream(layer, vec![], status(503));
    let requests = 1_000;
    for _ in 0..requests {
        let _ = send(&stack).await;
    }
    let calls = seen.lock().unwrap().len();
    assert!(
        calls as f64 <= requests as f64 * (1.0 + ratio),
        "{calls} calls for {requests} requests"
    );
    assert!(calls > requests, "the budget still allows some retries");
}

#[tokio::test(start_paused = true)]
async fn replays_share_the_body_and_one_idempotency_key() {
    let (stack, seen) = upstream(exact(), vec![status(503), status(503)], status(200));
    let _ = send(&stack).await;
    let _ = send(&stack).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert!(
        seen[..3].iter().all(|s| s.key == seen[0].key),
        "one key per logical request"
    );
    assert_ne!(seen[3].key, seen[0].key, "a new request, a new key");
    assert_eq!(seen[0].key.as_ref().map(String::len), Some(32));
    assert!(
        seen[..3].iter().all(|s| s.body_ptr == seen[0].body_ptr),
        "the same bytes, never copied"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_is_hedged_and_the_loser_cancelled() {
    let hedge = Hedge {
        after: HedgeAfter::Delay(Duration::from_secs(2)),
        when: HedgeWhen::Always,
    };
    let layer = exact().with_hedging(hedge).with_budget(1.0, 10, 10);
    let (stack, seen) = upstream(
        layer,
        vec![Answer::Delayed(200, Duration::from_secs(60))],
        Answer::Delayed(200, Duration::from_secs(1)),
    );
    let start = Instant::now();
    let (status_code, _) = send(&stack).await;
    assert_eq!(status_code.unwrap(), 200);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "the backup answered first"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    let completed = COMPLETED_DELAYED.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        COMPLETED_DELAYED.load(std::sync::atomic::Ordering::SeqCst),
        completed,
        "the slow first attempt was cancelled, not left running"
    );

    let idempotent_only = exact().with_hedging(Hedge {
        when: HedgeWhen::Idempotent,
        ..hedge
    });
    let (stack, seen) = upstream(
        idempotent_only,
        vec![],
        Answer::Delayed(200, Duration::from_secs(5)),
    );
    let _ = send(&stack).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a POST without an annotation is not hedged"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_from_below_are_returned_as_they_were() {
    let (stack, seen) = upstream(
        exact().with_max_attempts(2),
        vec![],
        Answer::Refused(Duration::from_millis(10)),
    );
    let (result, _) = send(&stack).await;
    let error = result.unwrap_err();
    assert!(error.is::<CircuitOpen>(), "{error}");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiting_out_an_open_breaker_costs_no_budget() {
    // No budget at all: an upstream failure is not retried...
    let layer = exact().with_budget(0.0, 0, 0);
    let (stack, seen) = upstream(layer.clone(), vec![status(503)], status(200));
    assert_eq!(send(&stack).await.0.unwrap(), 503);
    assert_eq!(seen.lock().unwrap().len(), 1);
    // ...but a breaker's refusal, which sent nothing upstream, is waited out and tried again.
    let (stack, seen) = upstream(
        layer,
        vec![Answer::Refused(Duration::from_secs(30))],
        status(200),
    );
    let start = Instant::now();
    assert_eq!(send(&stack).await.0.unwrap(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_without_spending_the_budget() {
    // No budget at all: a 503 is not retried, but a 429 — the upstream pacing its callers,
    // which the rate limiter below learns from — is waited out and tried again.
    let layer = exact().with_budget(0.0, 0, 0);
    let (stack, seen) = upstream(layer.clone(), vec![status(503)], status(200));
    assert_eq!(send(&stack).await.0.unwrap(), 503);
    assert_eq!(seen.lock().unwrap().len(), 1);
    let limited = Answer::Status(
        429,
        vec![("retry-after-ms", "250")],
        r#"{"error":{"type":"requests","message":"Rate limit reached"}}"#,
    );
    let (stack, seen) = upstream(layer, vec![limited], status(200));
    let start = Instant::now();
    assert_eq!(send(&stack).await.0.unwrap(), 200);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(seen.lock().unwrap().len(), 2);
}
