//! Every transition of a circuit under paused time, through the layer, with a scripted
//! upstream: trips (consecutive, rate, slow), open periods and their growth, the half-open
//! probe limit under concurrent callers, dropped probes, streams, manual control and events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState, Reason, Window};
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::CircuitOpen;
use tollgate_core::{BoxError, Provider, Scope};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// One scripted answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
    delay: Duration,
    /// Held until the test releases it.
    gated: bool,
}

fn status(code: u16) -> Answer {
    Answer {
        status: code,
        headers: vec![],
        body: "{}",
        delay: Duration::ZERO,
        gated: false,
    }
}

struct Upstream {
    script: Mutex<VecDeque<Answer>>,
    fallback: Mutex<Answer>,
    calls: AtomicUsize,
    gate: Notify,
}

type Stack = BoxCloneSyncService<Request<()>, Response<ObservedBody<Full<Bytes>>>, BoxError>;

fn stack(config: CircuitConfig) -> (Stack, Arc<Upstream>, tollgate_circuit::CircuitHandle) {
    let upstream = Arc::new(Upstream {
        script: Mutex::new(VecDeque::new()),
        fallback: Mutex::new(status(200)),
        calls: AtomicUsize::new(0),
        gate: Notify::new(),
    });
    let seen = upstream.clone();
    let provider = service_fn(move |_: Request<()>| {
        let upstream = seen.clone();
        async move {
            upstream.calls.fetch_add(1, Ordering::SeqCst);
            let answer = upstream
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| upstream.fallback.lock().unwrap().clone());
            if answer.gated {
                upstream.gate.notified().await;
            }
            tokio::time::sleep(answer.delay).await;
            let mut response =
                Response::builder().status(StatusCode::from_u16(answer.status).unwrap());
            for (name, value) in &answer.headers {
                response = response.header(*name, *value);
            }
            Ok::<_, Infallible>(
                response
                    .body(Full::new(Bytes::from_static(answer.body.as_bytes())))
                    .unwrap(),
            )
        }
    });
    let layer = CircuitBreakerLayer::shared(config).unwrap();
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

fn exact() -> CircuitConfig {
    CircuitConfig {
        jitter: 0.0,
        ..CircuitConfig::default()
    }
}

/// Sends one request and reads its body; `Err` holds the error.
async fn call(stack: &Stack) -> Result<StatusCode, BoxError> {
    let response = stack.clone().oneshot(Request::new(())).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

fn open_for(error: &BoxError) -> Option<Duration> {
    error
        .downcast_ref::<CircuitOpen>()
        .expect("a CircuitOpen error")
        .retry_after
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_calls_fail_fast() {
    let (stack, upstream, handle) = stack(exact());
    *upstream.fallback.lock().unwrap() = status(503);
    for _ in 0..5 {
        assert_eq!(call(&stack).await.unwrap(), 503);
    }
    assert_eq!(handle.state(&scope()), CircuitState::Open);
    let error = call(&stack).await.unwrap_err();
    assert_eq!(open_for(&error), Some(Duration::from_secs(30)));
    assert_eq!(
        upstream.calls.load(Ordering::SeqCst),
        5,
        "a refused call never reaches the upstream"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        open_for(&call(&stack).await.unwrap_err()),
        Some(Duration::from_secs(20))
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_probes_even_under_a_crowd() {
    let (stack, upstream, handle) = stack(exact());
    *upstream.fallback.lock().unwrap() = status(503);
    for _ in 0..5 {
        call(&stack).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    *upstream.fallback.lock().unwrap() = Answer {
        gated: true,
        ..status(200)
    };
    let mut crowd = Vec::new();
    for _ in 0..20 {
        let stack = stack.clone();
        crowd.push(tokio::spawn(async move { call(&stack).await }));
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.state(&scope()), CircuitState::HalfOpen);
    assert_eq!(
        upstream.calls.load(Ordering::SeqCst),
        5 + 3,
        "exactly three probes in flight"
    );
    upstream.gate.notify_waiters();
    let mut admitted = 0;
    for task in crowd {
        if task.await.unwrap().is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "the rest of the crowd was refused");
    assert_eq!(
        handle.state(&scope()),
        CircuitState::Closed,
        "three successful probes close it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer_and_a_dropped_probe_frees_its_slot() {
    let config = CircuitConfig {
        half_open_probes: 1,
        ..exact()
    };
    let (stack, upstream, handle) = stack(config);
    *upstream.fallback.lock().unwrap() = status(503);
    for _ in 0..5 {
        call(&stack).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        call(&stack).await.unwrap(),
        503,
        "the probe goes through and fails"
    );
    assert_eq!(handle.state(&scope()), CircuitState::Open);
    assert_eq!(
        open_for(&call(&stack).await.unwrap_err()),
        Some(Duration::from_secs(60)),
        "doubled"
    );

    tokio::time::advance(Duration::from_secs(60)).await;
    *upstream.fallback.lock().unwrap() = Answer {
        gated: true,
        ..status(200)
    };
    let probe = tokio::spawn({
        let stack = stack.clone();
        async move { call(&stack).await }
    });
    tokio::task::yield_now().await;
    assert!(call(&stack).await.is_err(), "the only probe slot is taken");
    probe.abort();
    let _ = probe.await;
    *upstream.fallback.lock().unwrap() = status(200);
    assert_eq!(
        call(&stack).await.unwrap(),
        200,
        "the dropped probe gave its slot back"
    );
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_providers_retry_after_sets_the_open_period() {
    let (stack, upstream, _) = stack(exact());
    *upstream.fallback.lock().unwrap() = Answer {
        headers: vec![("retry-after", "7")],
        ..status(529)
    };
    for _ in 0..5 {
        call(&stack).await.unwrap();
    }
    assert_eq!(
        open_for(&call(&stack).await.unwrap_err()),
        Some(Duration::from_secs(7))
    );
}

#[tokio::test(start_paused = true)]
async fn only_upstream_failures_count() {
    let (stack, upstream, handle) = stack(exact());
    let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
    for answer in [
        status(429),
        status(400),
        status(401),
        status(404),
        Answer {
            body,
            ..status(429)
        },
    ] {
        *upstream.fallback.lock().unwrap() = answer;
        for _ in 0..10 {
            call(&stack).await.unwrap();
        }
    }
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_stream_counts_when_it_ends() {
    let (stack, upstream, handle) = stack(exact());
    let error_after_200 = Answer {
        headers: vec![("content-type", "text/event-stream")],
        body: "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ..status(200)
    };
    *upstream.fallback.lock().unwrap() = error_after_200;
    for _ in 0..4 {
        assert_eq!(call(&stack).await.unwrap(), 200);
    }
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
    // A caller who stops reading mid-stream says nothing about the upstream.
    let response = stack.clone().oneshot(Request::new(())).await.unwrap();
    drop(response);
    assert_eq!(handle.metrics(&scope()).unwrap().consecutive_failures, 4);
    assert_eq!(call(&stack).await.unwrap(), 200);
    assert_eq!(
        handle.state(&scope()),
        CircuitState::Open,
        "the fifth error event after a 200 trips it"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_means_slow_to_answer_not_long_to_stream() {
    let config = CircuitConfig {
        consecutive_failures: None,
        failure_rate: None,
        slow_call_rate: Some(0.5),
        slow_call_threshold: Duration::from_secs(2),
        window: Window::Count(4),
        minimum_calls: 4,
        ..exact()
    };
    let (stack, upstream, handle) = stack(config);
    // Long streams that start at once are fine.
    *upstream.fallback.lock().unwrap() = Answer {
        headers: vec![("content-type", "text/event-stream")],
        body: "data: {}\n\n",
        ..status(200)
    };
    for _ in 0..8 {
        call(&stack).await.unwrap();
    }
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
    // Answers that take 3 s to start are slow: two of the last four trips the 50 % rate.
    *upstream.fallback.lock().unwrap() = Answer {
        delay: Duration::from_secs(3),
        ..status(200)
    };
    call(&stack).await.unwrap();
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
    call(&stack).await.unwrap();
    assert_eq!(handle.state(&scope()), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_from_before_the_trip_cannot_close_the_circuit() {
    let (stack, upstream, handle) = stack(exact());
    *upstream.fallback.lock().unwrap() = Answer {
        gated: true,
        ..status(200)
    };
    let early = tokio::spawn({
        let stack = stack.clone();
        async move { call(&stack).await }
    });
    tokio::task::yield_now().await;
    *upstream.fallback.lock().unwrap() = status(503);
    for _ in 0..5 {
        call(&stack).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    upstream.gate.notify_waiters();
    assert_eq!(early.await.unwrap().unwrap(), 200);
    assert_eq!(
        handle.state(&scope()),
        CircuitState::Open,
        "a success from the old period is ignored"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_control_and_events() {
    let (stack, upstream, handle) = stack(exact());
    let mut events = handle.subscribe();
    handle.force_open(&scope());
    assert!(call(&stack).await.is_err());
    assert_eq!(open_for(&call(&stack).await.unwrap_err()), None);
    handle.reset(&scope());
    assert_eq!(call(&stack).await.unwrap(), 200);
    handle.disable(&scope());
    *upstream.fallback.lock().unwrap() = status(503);
    for _ in 0..10 {
        call(&stack).await.unwrap();
    }
    assert_eq!(handle.state(&scope()), CircuitState::Disabled);
    handle.metrics_only(&scope());
    for _ in 0..10 {
        assert_eq!(
            call(&stack).await.unwrap(),
            503,
            "metrics-only never refuses"
        );
    }
    let seen: Vec<(CircuitState, CircuitState, Reason)> =
        std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| (e.from, e.to, e.reason))
            .collect();
    assert_eq!(
        seen,
        [
            (
                CircuitState::Closed,
                CircuitState::ForcedOpen,
                Reason::Manual
            ),
            (
                CircuitState::ForcedOpen,
                CircuitState::Closed,
                Reason::Manual
            ),
            (CircuitState::Closed, CircuitState::Disabled, Reason::Manual),
            (
                CircuitState::Disabled,
                CircuitState::MetricsOnly,
                Reason::Manual
            ),
            // Metrics-only still runs the machine and reports what it would have done.
            (
                CircuitState::Closed,
                CircuitState::Open,
                Reason::ConsecutiveFailures
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn a_callers_own_deadline_running_out_is_not_a_failure() {
    // The upstream never answers in time: with the request's own deadline cut short each call
    // (DeadlineExceeded), the breaker stays closed; a timeout of the stack's own trips it.
    let deadline = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = deadline.clone();
    let provider = service_fn(move |_: Request<()>| {
        let deadline = flag.load(Ordering::SeqCst);
        async move {
            Err::<Response<Full<Bytes>>, BoxError>(if deadline {
                Box::new(tollgate_core::error::DeadlineExceeded)
            } else {
                Box::new(tower::timeout::error::Elapsed::new())
            })
        }
    });
    let layer = CircuitBreakerLayer::shared(exact()).unwrap();
    let handle = layer.handle();
    let stack = ServiceBuilder::new().layer(layer).service(provider);
    for _ in 0..20 {
        let error = stack.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(
            error.is::<tollgate_core::error::DeadlineExceeded>(),
            "{error}"
        );
    }
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
    deadline.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        stack.clone().oneshot(Request::new(())).await.unwrap_err();
    }
    assert_eq!(handle.state(&scope()), CircuitState::Open);
}
