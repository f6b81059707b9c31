//! Resilience4j parity: minimum number of calls, failure-rate threshold (inclusive),
//! slow-call threshold (a call is slow when it takes longer than the threshold), count and
//! time windows. Driven through the layer over a scripted upstream, under paused time.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitHandle, CircuitState, Window};
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{Provider, Scope};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Rate-only configuration: no consecutive-failure rule, no jitter.
fn rates(window: Window, minimum_calls: u32, failure_rate: Option<f64>) -> CircuitConfig {
    CircuitConfig {
        consecutive_failures: None,
        failure_rate,
        window,
        minimum_calls,
        jitter: 0.0,
        ..CircuitConfig::default()
    }
}

/// Runs `calls` (status, delay) through a shared circuit; the state after each call.
async fn run(config: CircuitConfig, calls: &[(u16, u64)]) -> Vec<CircuitState> {
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(calls.to_vec())));
    let provider = service_fn(move |_: Request<()>| {
        let (status, delay_ms) = script.lock().unwrap().pop_front().unwrap_or((200, 0));
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let response = Response::builder().status(StatusCode::from_u16(status).unwrap());
            Ok::<_, Infallible>(response.body(Full::new(Bytes::new())).unwrap())
        }
    });
    let layer = CircuitBreakerLayer::shared(config).unwrap();
    let handle: CircuitHandle = layer.handle();
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(provider);
    let mut states = Vec::new();
    for _ in calls {
        if let Ok(response) = service.clone().oneshot(Request::new(())).await {
            response.into_body().collect().await.unwrap();
        }
        states.push(handle.state(&Scope::new(Provider::OpenAiCompatible)));
    }
    states
}

fn ok() -> (u16, u64) {
    (200, 0)
}

fn fail() -> (u16, u64) {
    (500, 0)
}

#[tokio::test(start_paused = true)]
async fn no_rate_trips_before_the_minimum_number_of_calls() {
    let states = run(rates(Window::Count(10), 10, Some(0.5)), &[fail(); 10]).await;
    assert!(
        states[..9].iter().all(|s| *s == CircuitState::Closed),
        "9 failures of a minimum of 10: {states:?}"
    );
    assert_eq!(states[9], CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn the_failure_rate_threshold_is_inclusive() {
    let half = [
        fail(),
        ok(),
        fail(),
        ok(),
        fail(),
        ok(),
        fail(),
        ok(),
        fail(),
        ok(),
    ];
    let states = run(rates(Window::Count(10), 10, Some(0.5)), &half).await;
    assert_eq!(
        states[9],
        CircuitState::Open,
        "5 of 10 is 50 %: at the threshold trips"
    );

    let under = [
        fail(),
        ok(),
        fail(),
        ok(),
        fail(),
        ok(),
        fail(),
        ok(),
        ok(),
        ok(),
    ];
    let states = run(rates(Window::Count(10), 10, Some(0.5)), &under).await;
    assert_eq!(states[9], CircuitState::Closed, "4 of 10 stays closed");
}

#[tokio::test(start_paused = true)]
async fn a_count_window_slides() {
    // Failures early in the run fall out of a window of 4 before the rate is reached.
    let calls = [fail(), fail(), ok(), ok(), ok(), ok(), fail(), ok()];
    let states = run(rates(Window::Count(4), 4, Some(0.75)), &calls).await;
    assert!(
        states.iter().all(|s| *s == CircuitState::Closed),
        "{states:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_time_window_counts_the_last_seconds() {
    // One call a second into a 5 s window: old failures age out.
    let calls: Vec<(u16, u64)> = [
        fail(),
        fail(),
        ok(),
        ok(),
        ok(),
        ok(),
        ok(),
        fail(),
        fail(),
        fail(),
    ]
    .iter()
    .map(|(status, _)| (*status, 1_000))
    .collect();
    let states = run(rates(Window::Time(5), 5, Some(0.6)), &calls).await;
    assert_eq!(states[8], CircuitState::Closed, "2 of 5 in the window");
    assert_eq!(
        states[9],
        CircuitState::Open,
        "3 of 5 in the window reach 60 %"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_is_strictly_longer_than_the_threshold() {
    let config = CircuitConfig {
        slow_call_rate: Some(1.0),
        slow_call_threshold: Duration::from_millis(500),
        ..rates(Window::Count(3), 3, None)
    };
    let at_threshold = [(200, 500); 3];
    let states = run(config.clone(), &at_threshold).await;
    assert_eq!(
        states[2],
        CircuitState::Closed,
        "500 ms is not slower than 500 ms"
    );
    let over = [(200, 501); 3];
    let states = run(config, &over).await;
    assert_eq!(states[2], CircuitState::Open);
}
