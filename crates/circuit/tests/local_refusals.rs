//! A call that a layer below the breaker refused never reached the upstream: local sheds,
//! queue timeouts, local rate limits and a lower breaker's refusals count neither as failures
//! nor as successes, and a half-open probe that meets one gives its slot back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
use tollgate_concurrency::ConcurrencyLimitLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::{CircuitOpen, Overloaded, QueueTimeout, RateLimited};
use tollgate_core::{BoxError, Provider, RateLimitDimension, Scope};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// What the layers below answer: a status from the upstream, or a local refusal.
type Answer = Result<u16, fn() -> BoxError>;

fn shed() -> BoxError {
    Box::new(Overloaded { retry_after: None })
}

fn queue_timeout() -> BoxError {
    Box::new(QueueTimeout {
        waited: Duration::from_secs(1),
    })
}

fn local_limit() -> BoxError {
    Box::new(RateLimited {
        dimension: RateLimitDimension::Tokens,
        retry_after: Some(Duration::from_secs(2)),
    })
}

fn lower_breaker() -> BoxError {
    Box::new(CircuitOpen::new(Some(Duration::from_secs(5))))
}

fn exact() -> CircuitConfig {
    CircuitConfig {
        jitter: 0.0,
        ..CircuitConfig::default()
    }
}

fn scope() -> Scope {
    Scope::new(Provider::OpenAiCompatible)
}

/// A breaker over a scripted service; past the script, every call gets a 200.
fn breaker_over(
    config: CircuitConfig,
    script: Vec<Answer>,
) -> (
    impl tower::Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future = impl Send,
    > + Clone,
    tollgate_circuit::CircuitHandle,
) {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let below = service_fn(move |_: Request<()>| {
        let answer = script.lock().unwrap().pop_front().unwrap_or(Ok(200));
        async move {
            let status = answer.map_err(|refusal| refusal())?;
            Ok::<_, BoxError>(
                Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap(),
            )
        }
    });
    let layer = CircuitBreakerLayer::shared(config).unwrap();
    let handle = layer.handle();
    (ServiceBuilder::new().layer(layer).service(below), handle)
}

#[tokio::test(start_paused = true)]
async fn local_refusals_below_never_open_the_breaker() {
    let refusals: [fn() -> BoxError; 4] = [shed, queue_timeout, local_limit, lower_breaker];
    let script: Vec<Answer> = refusals
        .iter()
        .flat_map(|&refusal| std::iter::repeat_n(Err(refusal), 20))
        .collect();
    let (breaker, handle) = breaker_over(exact(), script);
    for _ in 0..80 {
        let error = breaker.clone().oneshot(Request::new(())).await.unwrap_err();
        // The lower breaker's refusal says 5 s; this breaker's own would say 30 s.
        let own_refusal = error
            .downcast_ref::<CircuitOpen>()
            .is_some_and(|open| open.retry_after != Some(Duration::from_secs(5)));
        assert!(!own_refusal, "the breaker itself refused: {error}");
    }
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
    let counts = handle
        .metrics(&scope())
        .expect("the circuit has seen calls");
    assert_eq!(counts.consecutive_failures, 0, "{counts:?}");
    assert_eq!(counts.window.failures, 0, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn one_slow_call_and_queue_timeouts_behind_it_do_not_open_the_breaker() {
    // The incident: one slow call held the only slot, the calls queued behind it gave up, and
    // the breaker counted each give-up as an upstream failure.
    let gate = Arc::new(Notify::new());
    let held = gate.clone();
    let upstream = service_fn(move |_: Request<()>| {
        let gate = held.clone();
        async move {
            gate.notified().await;
            Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        }
    });
    let layer = CircuitBreakerLayer::shared(exact()).unwrap();
    let handle = layer.handle();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .layer(ConcurrencyLimitLayer::new(1).with_queue_timeout(Duration::from_secs(1)))
        .layer(ClassifyLayer::new())
        .service(upstream);
    let slow = tokio::spawn(stack.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    for _ in 0..10 {
        let error = stack.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(error.is::<QueueTimeout>(), "{error}");
    }
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
    gate.notify_one();
    let response = slow.await.unwrap().unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
    assert_eq!(handle.metrics(&scope()).unwrap().window.failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_meets_a_local_refusal_gives_its_slot_back() {
    let config = CircuitConfig {
        half_open_probes: 1,
        ..exact()
    };
    let mut script: Vec<Answer> = vec![Ok(503); 5];
    script.push(Err(shed));
    script.push(Err(queue_timeout));
    let (breaker, handle) = breaker_over(config, script);
    for _ in 0..5 {
        let response = breaker.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), 503);
    }
    assert_eq!(handle.state(&scope()), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(30)).await;

    for want in ["shed", "queue"] {
        let error = breaker.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(
            !error.is::<CircuitOpen>(),
            "the probe slot was free, the {want} refusal came from below: {error}"
        );
        assert_eq!(
            handle.state(&scope()),
            CircuitState::HalfOpen,
            "a {want} refusal neither reopens nor closes the circuit"
        );
    }
    let response = breaker.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), 200, "the returned slot admitted a probe");
    assert_eq!(handle.state(&scope()), CircuitState::Closed);
}
