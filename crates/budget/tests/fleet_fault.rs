//! Done when: with Redis killed (SIGKILL) or paused (SIGSTOP), no call waits on it past the
//! command timeout; fail-open, a process keeps to its local share of what was left; fail-closed,
//! calls are refused with `BudgetUnavailable` (the Redis error as its source, the password
//! nowhere); and what was settled meanwhile reaches Redis when it answers again, exactly once,
//! where a fresh layer sees it.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tollgate_budget::{
    BudgetConfig, BudgetExceeded, BudgetLayer, BudgetScope, BudgetSpec, BudgetUnavailable,
    CalendarWindow, RedisBooks, Usd,
};
use tollgate_core::{BoxError, EndpointKind, LlmRequest, Provider};
use tollgate_testkit::redis::RedisServer;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

/// A gpt-4o call of 1,000 input tokens capped at 500 output (no margin): $0.0075 at worst.
const WORST: Usd = Usd::from_micros(7_500);
const TIMEOUT: Duration = Duration::from_millis(250);
/// What a call may take beyond the command timeout on a busy test machine.
const SLACK: Duration = Duration::from_millis(200);

type Stack = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, BoxError>;

fn config() -> BudgetConfig {
    BudgetConfig {
        budgets: vec![BudgetSpec {
            name: "daily".into(),
            scope: BudgetScope::Overall,
            usd: Some(10.0 * 0.0075),
            window: Some(CalendarWindow::Day),
            ..BudgetSpec::default()
        }],
        input_margin_percent: 0,
        ..BudgetConfig::default()
    }
}

fn chat() -> Request<Full<Bytes>> {
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.model = Some("gpt-4o".into());
    llm.input_tokens_estimate = 1_000;
    llm.max_output_tokens = Some(500);
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    request.extensions_mut().insert(llm);
    request
}

/// An upstream that answers 200 at once, without `ClassifyLayer`: each call is charged its
/// worst case when its answer arrives.
fn stack(layer: &BudgetLayer<RedisBooks>) -> Stack {
    let upstream = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
    });
    BoxCloneService::new(layer.layer(upstream))
}

/// One call: whether it was answered, and how long it took.
async fn call(stack: &Stack) -> (Result<(), BoxError>, Duration) {
    let start = Instant::now();
    let result = stack.clone().oneshot(chat()).await.map(drop);
    (result, start.elapsed())
}

/// Calls until one is refused; each within the command timeout. How many were answered.
async fn answered_until_refused(stack: &Stack) -> usize {
    for answered in 0.. {
        let (result, took) = call(stack).await;
        assert!(took < TIMEOUT + SLACK, "a call waited {took:?}");
        if let Err(error) = result {
            assert!(error.is::<BudgetExceeded>(), "{error}");
            return answered;
        }
    }
    unreachable!()
}

async fn layer(url: &str, books: impl FnOnce(RedisBooks) -> RedisBooks) -> BudgetLayer<RedisBooks> {
    let connected = RedisBooks::connect(url).await.expect("redis answers");
    BudgetLayer::configured_with_redis(&config(), books(connected)).unwrap()
}

/// Waits (real time: the books try Redis every second) until Redis answers `layer` again.
async fn recovered(layer: &BudgetLayer<RedisBooks>) {
    let start = Instant::now();
    while layer.books().is_degraded() {
        assert!(start.elapsed() < Duration::from_secs(4), "still degraded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spent(layer: &BudgetLayer<RedisBooks>) -> Usd {
    layer.snapshot()[0].spent.usd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted_keeps_to_the_local_share_and_catches_up() {
    let mut server = RedisServer::start(&[]);
    let layer = layer(&server.url(), |b| b.with_local_share(0.5)).await;
    let stack = stack(&layer);
    for _ in 0..4 {
        call(&stack).await.0.expect("within the budget");
    }
    layer.flush().await.unwrap();
    assert_eq!(spent(&layer), WORST * 4);

    server.kill();
    // Half of what was left (6 calls' worth): three calls, then a refusal.
    assert_eq!(answered_until_refused(&stack).await, 3);
    assert!(layer.books().is_degraded());
    assert_eq!(spent(&layer), WORST * 7, "the local settlements, unsent");

    // Back empty (no persistence): the spend last seen, then what was settled meanwhile.
    server.restart();
    recovered(&layer).await;
    layer.flush().await.unwrap();
    assert_eq!(spent(&layer), WORST * 7);
    assert_eq!(layer.snapshot()[0].reserved.usd, Usd::ZERO);
    let fresh = layer_fresh(&server).await;
    assert_eq!(
        spent(&fresh),
        WORST * 7,
        "a fresh layer sees the fleet's spend"
    );
    // The shared limits again: three calls are left in the budget.
    assert_eq!(answered_until_refused(&stack).await, 3);
}

async fn layer_fresh(server: &RedisServer) -> BudgetLayer<RedisBooks> {
    let fresh = layer(&server.url(), |b| b).await;
    fresh.flush().await.unwrap();
    fresh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_holds_no_call_past_the_command_timeout_and_settlements_land_once() {
    let server = RedisServer::start(&[]);
    let books = |b: RedisBooks| b.with_local_share(0.5).with_hold(Duration::from_secs(2));
    let (layer, other) = (
        layer(&server.url(), books).await,
        layer(&server.url(), books).await,
    );
    let stack = stack(&layer);
    for _ in 0..2 {
        call(&stack).await.0.expect("within the budget");
    }
    layer.flush().await.unwrap();
    other.flush().await.unwrap();

    server.pause();
    let paused = Instant::now();
    // Half of the 8 calls' worth left: four calls, then a refusal; the first waited on Redis
    // for the command timeout, the others not at all.
    assert_eq!(answered_until_refused(&stack).await, 4);
    assert!(layer.books().is_degraded());
    let (result, took) = call(&self::stack(&other)).await;
    assert!(result.is_ok() && took < TIMEOUT + SLACK, "{took:?}");
    // A few seconds of outage: the books probe it every second, each probe timing out.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(paused.elapsed())).await;
    server.resume();

    recovered(&layer).await;
    recovered(&other).await;
    for books in [&layer, &other] {
        books.flush().await.unwrap();
    }
    // Spend exactly once: 2 before, 4 and 1 during the pause.
    assert_eq!(spent(&layer), WORST * 7);
    // The reservation Redis took after its caller gave up on it is given back (or expires).
    let start = Instant::now();
    while layer.snapshot()[0].reserved.usd != Usd::ZERO {
        assert!(start.elapsed() < Duration::from_secs(3), "still reserved");
        tokio::time::sleep(Duration::from_millis(50)).await;
        layer.flush().await.unwrap();
    }
    assert_eq!(spent(&layer_fresh(&server).await), WORST * 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_with_budget_unavailable_and_never_shows_the_password() {
    let mut server = RedisServer::start(&["--requirepass", "hunter2"]);
    let url = format!("redis://:hunter2@127.0.0.1:{}", server.port);
    let layer = layer(&url, |b| b.with_fail_closed(true)).await;
    let stack = stack(&layer);
    call(&stack).await.0.expect("within the budget");

    server.kill();
    for _ in 0..3 {
        let (result, took) = call(&stack).await;
        assert!(took < TIMEOUT + SLACK, "{took:?}");
        let error = result.expect_err("refused while redis is away");
        let unavailable = error
            .downcast_ref::<BudgetUnavailable>()
            .unwrap_or_else(|| panic!("not BudgetUnavailable: {error}"));
        assert!(!error.is::<BudgetExceeded>());
        assert!(
            std::error::Error::source(unavailable).is_some(),
            "the redis error"
        );
        let shown = format!("{unavailable} {unavailable:?}");
        assert!(shown.contains("may succeed later"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    assert!(!format!("{:?}", layer.books()).contains("hunter2"));
    let refused = RedisBooks::connect(&url).await.expect_err("redis is away");
    assert!(!refused.to_string().contains("hunter2"), "{refused}");

    server.restart();
    recovered(&layer).await;
    call(&stack).await.0.expect("answered again");
    layer.flush().await.unwrap();
    assert_eq!(spent(&layer), WORST * 2);
}
