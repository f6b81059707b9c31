//! The overload layer under paused time: the limit follows shed calls and successes, permits are
//! held until the body ends and come back when dropped, a cancelled call records nothing,
//! errors that never reached the upstream are ignored, streams are judged when they end, the
//! throttle sheds batch work first, and transitions are reported.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tollgate_concurrency::{PermitBody, Priority};
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::{CircuitOpen, DeadlineExceeded, Overloaded, QueueTimeout};
use tollgate_core::{BoxError, Provider, Scope};
use tollgate_overload::future::Lease;
use tollgate_overload::{Aimd, DetectorConfig, OverloadHandle, OverloadLayer, OverloadState};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// One scripted answer: a status and body, after a delay, or an error that never reached the
/// upstream.
#[derive(Clone)]
enum Answer {
    Status {
        code: u16,
        body: &'static str,
        sse: bool,
        delay: Duration,
        gated: bool,
    },
    LocalRefusal,
    /// A timeout below: the request's own deadline ran out (`true`), or a plain `Elapsed`.
    TimedOut {
        deadline: bool,
    },
}

fn status(code: u16) -> Answer {
    Answer::Status {
        code,
        body: "{}",
        sse: false,
        delay: Duration::from_millis(100),
        gated: false,
    }
}

fn gated() -> Answer {
    Answer::Status {
        code: 200,
        body: "{}",
        sse: false,
        delay: Duration::ZERO,
        gated: true,
    }
}

#[derive(Default)]
struct Upstream {
    script: Mutex<VecDeque<Answer>>,
    fallback: Mutex<Option<Answer>>,
    calls: AtomicUsize,
    gate: Notify,
}

impl Upstream {
    fn answer(&self, answer: Answer) {
        *self.fallback.lock().unwrap() = Some(answer);
    }
}

type Body = PermitBody<ObservedBody<Full<Bytes>>, Lease>;
type Stack = BoxCloneSyncService<Request<()>, Response<Body>, BoxError>;

fn stack(layer: OverloadLayer) -> (Stack, Arc<Upstream>, OverloadHandle) {
    let upstream = Arc::new(Upstream::default());
    upstream.answer(status(200));
    let seen = upstream.clone();
    let provider = service_fn(move |_: Request<()>| {
        let upstream = seen.clone();
        async move {
            upstream.calls.fetch_add(1, Ordering::SeqCst);
            let next = upstream.script.lock().unwrap().pop_front();
            let answer = next.unwrap_or_else(|| upstream.fallback.lock().unwrap().clone().unwrap());
            let (code, body, sse, delay, gated) = match answer {
                Answer::Status {
                    code,
                    body,
                    sse,
                    delay,
                    gated,
                } => (code, body, sse, delay, gated),
                Answer::LocalRefusal => {
                    return Err::<Response<Full<Bytes>>, BoxError>(Box::new(CircuitOpen::new(
                        None,
                    )));
                }
                Answer::TimedOut { deadline } => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(if deadline {
                        Box::new(DeadlineExceeded)
                    } else {
                        Box::new(tower::timeout::error::Elapsed::new())
                    });
                }
            };
            if gated {
                upstream.gate.notified().await;
            }
            tokio::time::sleep(delay).await;
            let mut response = Response::builder().status(StatusCode::from_u16(code).unwrap());
            if sse {
                response = response.header("content-type", "text/event-stream");
            }
            Ok(response
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap())
        }
    });
    let handle = layer.handle();
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(provider);
    (BoxCloneSyncService::new(service), upstream, handle)
}

fn scope() -> Scope {
    Scope::new(Provider::OpenAiCompatible)
}

/// Sends one request and reads its body.
async fn call(stack: &Stack) -> Result<StatusCode, BoxError> {
    call_with(stack, Priority::Interactive).await
}

async fn call_with(stack: &Stack, priority: Priority) -> Result<StatusCode, BoxError> {
    let mut request = Request::new(());
    request.extensions_mut().insert(priority);
    let response = stack.clone().oneshot(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// Runs `n` calls at once; returns their results.
async fn burst(stack: &Stack, n: usize) -> Vec<Result<StatusCode, BoxError>> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let stack = stack.clone();
            tokio::spawn(async move { call(&stack).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

#[tokio::test(start_paused = true)]
async fn successes_at_the_limit_raise_it_and_a_shed_burst_cuts_it_once() {
    let layer = OverloadLayer::new()
        .with_algorithm(Aimd::new().with_initial(4))
        .without_throttle();
    let (stack, upstream, handle) = stack(layer);
    // Calls one at a time never use half of 4: the limit stays.
    for _ in 0..20 {
        call(&stack).await.unwrap();
    }
    assert_eq!(handle.limit(&scope()), Some(4));
    // Bursts of 4 use it: it grows by about one per round trip while at least half is used.
    for _ in 0..4 {
        burst(&stack, 4).await;
    }
    assert_eq!(handle.limit(&scope()), Some(6));
    // A burst of 6 all shed: one cut (×0.9), not six.
    upstream.answer(status(529));
    for result in burst(&stack, 6).await {
        assert_eq!(result.unwrap(), 529);
    }
    assert_eq!(handle.limit(&scope()), Some(5));
}

#[tokio::test(start_paused = true)]
async fn timeouts_never_let_the_limit_climb() {
    let layer = OverloadLayer::new()
        .with_algorithm(Aimd::new().with_initial(8))
        .without_throttle();
    let (stack, upstream, handle) = stack(layer);
    upstream.answer(status(504));
    let mut last = 8;
    for _ in 0..30 {
        burst(&stack, 8).await;
        let limit = handle.limit(&scope()).unwrap();
        assert!(limit <= last, "the limit climbed from {last} to {limit}");
        last = limit;
    }
    assert_eq!(last, 1);
}

#[tokio::test(start_paused = true)]
async fn a_callers_own_deadline_running_out_is_not_a_drop() {
    let layer = OverloadLayer::new()
        .with_algorithm(Aimd::new().with_initial(8))
        .without_throttle();
    let (stack, upstream, handle) = stack(layer);
    upstream.answer(Answer::TimedOut { deadline: true });
    for _ in 0..10 {
        for result in burst(&stack, 8).await {
            assert!(result.unwrap_err().is::<DeadlineExceeded>());
        }
    }
    assert_eq!(
        handle.limit(&scope()),
        Some(8),
        "the caller's budget, not overload"
    );
    assert_eq!(handle.in_flight(&scope()), 0);
    // The same burst timing out on a limit of the stack's own is a drop.
    upstream.answer(Answer::TimedOut { deadline: false });
    burst(&stack, 8).await;
    assert_eq!(handle.limit(&scope()), Some(7));
}

#[tokio::test(start_paused = true)]
async fn the_permit_is_held_until_the_body_ends_and_a_drop_gives_it_back() {
    let layer = OverloadLayer::new()
        .with_algorithm(Aimd::new().with_initial(1).with_bounds(1, 1))
        .without_throttle()
        .with_queue_timeout(Duration::from_secs(1));
    let (stack, _upstream, handle) = stack(layer);
    let held = stack.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(&scope()), 1);
    let error = call(&stack).await.unwrap_err();
    assert!(error.is::<QueueTimeout>(), "{error}");
    drop(held);
    assert_eq!(handle.in_flight(&scope()), 0);
    assert_eq!(call(&stack).await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_records_nothing_and_frees_its_permit() {
    let layer = OverloadLayer::new()
        .with_algorithm(Aimd::new().with_initial(1).with_bounds(1, 10))
        .without_throttle();
    let (stack, upstream, handle) = stack(layer);
    upstream.answer(gated());
    let pending = tokio::spawn({
        let stack = stack.clone();
        async move { call(&stack).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(handle.in_flight(&scope()), 1);
    pending.abort();
    let _ = pending.await;
    assert_eq!(handle.in_flight(&scope()), 0);
    assert_eq!(handle.limit(&scope()), Some(1));
    upstream.answer(status(200));
    assert_eq!(call(&stack).await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn refusals_from_below_say_nothing_about_the_upstream() {
    let layer = OverloadLayer::new()
        .with_algorithm(Aimd::new().with_initial(4))
        .without_throttle();
    let (stack, upstream, handle) = stack(layer);
    upstream.answer(Answer::LocalRefusal);
    for _ in 0..20 {
        let error = call(&stack).await.unwrap_err();
        assert!(error.is::<CircuitOpen>());
    }
    assert_eq!(handle.limit(&scope()), Some(4));
    assert_eq!(handle.state(&scope()), OverloadState::Normal);
    // Client errors neither.
    upstream.answer(status(400));
    for _ in 0..20 {
        burst(&stack, 4).await;
    }
    assert_eq!(handle.limit(&scope()), Some(4));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_midway_is_a_drop_when_it_ends() {
    let layer = OverloadLayer::new()
        .with_algorithm(Aimd::new().with_initial(10))
        .without_throttle();
    let (stack, upstream, handle) = stack(layer);
    upstream.answer(Answer::Status {
        code: 200,
        body: "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        sse: true,
        delay: Duration::from_millis(50),
        gated: false,
    });
    let response = stack.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        handle.limit(&scope()),
        Some(10),
        "not judged at the headers"
    );
    response.into_body().collect().await.unwrap();
    assert_eq!(
        handle.limit(&scope()),
        Some(9),
        "the overloaded_error event is a drop"
    );
}

#[tokio::test(start_paused = true)]
async fn under_sustained_shedding_the_throttle_sheds_batch_first() {
    let detector = DetectorConfig {
        window: Duration::from_secs(10),
        ..DetectorConfig::default()
    };
    let layer = OverloadLayer::new()
        .shared()
        .with_seed(7)
        .with_detector(detector);
    let (stack, upstream, handle) = stack(layer);
    let mut events = handle.subscribe();
    for _ in 0..20 {
        call(&stack).await.unwrap();
    }
    // The upstream accepts one call in three.
    upstream.answer(status(529));
    for i in 0..300 {
        if i % 3 == 0 {
            upstream.script.lock().unwrap().push_back(status(200));
        }
        let _ = call(&stack).await;
    }
    assert_eq!(handle.state(&scope()), OverloadState::Critical);
    let first = events.recv().await.unwrap();
    assert_eq!(
        (first.from, first.to),
        (OverloadState::Normal, OverloadState::Warning)
    );
    let second = events.recv().await.unwrap();
    assert_eq!(
        (second.from, second.to),
        (OverloadState::Warning, OverloadState::Critical)
    );
    assert!(second.bad_share >= 0.25);
    // Now count who is shed locally, with the upstream refusing everything.
    let (mut interactive, mut batch) = (0, 0);
    for _ in 0..200 {
        let sent = upstream.calls.load(Ordering::SeqCst);
        let shed = |r: &Result<StatusCode, BoxError>, sent: usize| {
            r.as_ref().is_err_and(|e| e.is::<Overloaded>())
                && upstream.calls.load(Ordering::SeqCst) == sent
        };
        if shed(&call_with(&stack, Priority::Interactive).await, sent) {
            interactive += 1;
        }
        let sent = upstream.calls.load(Ordering::SeqCst);
        if shed(&call_with(&stack, Priority::Batch).await, sent) {
            batch += 1;
        }
    }
    println!(
        "shed locally, upstream Critical: interactive {interactive} of 200, batch {batch} of 200"
    );
    assert!(interactive > 20, "interactive shed {interactive} of 200");
    assert!(
        batch > interactive + 20,
        "batch shed {batch}, interactive {interactive}"
    );
    let snapshot = &handle.snapshot()[0];
    assert!(snapshot.rejection_probability > 0.0);
    assert_eq!(snapshot.state, OverloadState::Critical);
}

#[tokio::test(start_paused = true)]
async fn recovery_goes_through_recovering_back_to_normal() {
    let detector = DetectorConfig {
        window: Duration::from_secs(10),
        recovery: Duration::from_secs(10),
        ..DetectorConfig::default()
    };
    let layer = OverloadLayer::new()
        .shared()
        .without_throttle()
        .with_detector(detector);
    let (stack, upstream, handle) = stack(layer);
    upstream.answer(status(529));
    for _ in 0..20 {
        call(&stack).await.unwrap();
    }
    assert_eq!(handle.state(&scope()), OverloadState::Critical);
    upstream.answer(status(200));
    let mut seen = Vec::new();
    for _ in 0..300 {
        call(&stack).await.unwrap();
        let state = handle.state(&scope());
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
    assert_eq!(
        seen,
        [
            OverloadState::Critical,
            OverloadState::Recovering,
            OverloadState::Normal
        ]
    );
    assert_eq!(handle.recommended_batch_size(&scope(), 256), 256);
}

#[tokio::test(start_paused = true)]
async fn the_batch_size_follows_the_breaker_probe() {
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = open.clone();
    let layer = OverloadLayer::new().with_breaker_probe(move |_| probe.load(Ordering::SeqCst));
    let (_stack, _upstream, handle) = stack(layer);
    assert_eq!(handle.recommended_batch_size(&scope(), 64), 64);
    open.store(true, Ordering::SeqCst);
    assert_eq!(handle.recommended_batch_size(&scope(), 64), 1);
}

#[test]
#[should_panic(expected = "invalid detector config")]
fn a_bad_detector_config_is_refused() {
    let _ = OverloadLayer::new().with_detector(DetectorConfig {
        warning_share: 0.9,
        critical_share: 0.1,
        ..DetectorConfig::default()
    });
}
