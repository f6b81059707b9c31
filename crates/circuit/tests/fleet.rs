//! Done when: three layers ("replicas") over one redis-server and one simulated upstream share
//! one circuit per scope — an open on the replica that saw the failures refuses on the others
//! within the sync bound, half-open admits exactly the configured probes in the whole fleet, a
//! success closes it everywhere, a manual open on one refuses on all — and with Redis paused
//! (SIGSTOP) or killed no call waits on it, each circuit works on its own, and sharing resumes
//! when it answers. Real time (a real Redis answers in real time), each test a few seconds.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tollgate_circuit::{
    CircuitBreakerLayer, CircuitConfig, CircuitHandle, CircuitState, RedisBreakerState,
};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::CircuitOpen;
use tollgate_core::{BoxError, Scope};
use tollgate_sim::{SimBody, SimConfig, SimService};
use tollgate_testkit::redis::RedisServer;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const SYNC: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_millis(250);
/// What a step may take beyond its bound on a busy test machine.
const SLACK: Duration = Duration::from_millis(250);
const SECRET: &str = "sk-fleet-secret-0123456789";

type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<ObservedBody<SimBody>>, BoxError>;

/// One simulated provider, down (every request a 529 `overloaded_error`) or up (answers after
/// `latency`); counts the requests that reach it.
struct Upstream {
    down: AtomicBool,
    failing: SimService,
    healthy: SimService,
    calls: AtomicUsize,
}

impl Upstream {
    fn new(latency: &str) -> Arc<Self> {
        let sim = |toml: String| SimService::new(SimConfig::from_toml(&toml).unwrap()).unwrap();
        Arc::new(Self {
            down: AtomicBool::new(false),
            failing: sim("[faults]\noverload_rate = 1.0\noverload_status = 529\n".to_owned()),
            healthy: sim(format!("[latency]\ntime_to_first_token = \"{latency}\"\n")),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn config() -> CircuitConfig {
    CircuitConfig {
        consecutive_failures: Some(3),
        failure_rate: None,
        open_duration: Duration::from_secs(2),
        jitter: 0.0,
        half_open_probes: 2,
        ..CircuitConfig::default()
    }
}

/// A replica: its own layer and Redis connection, over the shared upstream.
async fn replica(
    url: &str,
    config: CircuitConfig,
    upstream: &Arc<Upstream>,
) -> (Stack, CircuitHandle) {
    let state = RedisBreakerState::connect(url)
        .await
        .unwrap()
        .with_sync_interval(SYNC)
        .with_command_timeout(TIMEOUT);
    let layer = CircuitBreakerLayer::new(config).unwrap().with_redis(state);
    let handle = layer.handle();
    let upstream = upstream.clone();
    let provider = service_fn(move |request: Request<Full<Bytes>>| {
        let upstream = upstream.clone();
        async move {
            upstream.calls.fetch_add(1, Ordering::SeqCst);
            let sim = if upstream.down.load(Ordering::SeqCst) {
                upstream.failing.clone()
            } else {
                upstream.healthy.clone()
            };
            sim.oneshot(request).await
        }
    });
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(provider);
    (BoxCloneSyncService::new(stack), handle)
}

async fn replicas(
    url: &str,
    config: CircuitConfig,
    upstream: &Arc<Upstream>,
) -> Vec<(Stack, CircuitHandle)> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(replica(url, config.clone(), upstream).await);
    }
    // Each replica's circuit for the scope exists (one healthy call each, at once).
    let warm: Vec<_> = out
        .iter()
        .map(|(stack, _)| {
            let stack = stack.clone();
            tokio::spawn(async move { call(&stack).await.0.unwrap() })
        })
        .collect();
    for task in warm {
        assert_eq!(task.await.unwrap(), 200);
    }
    out
}

fn chat() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", format!("Bearer {SECRET}"))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","max_tokens":8,"messages":[{"role":"user","content":"ping"}]}"#,
        )))
        .unwrap()
}

/// One call: its status or error, and how long it took.
async fn call(stack: &Stack) -> (Result<u16, BoxError>, Duration) {
    let start = Instant::now();
    let result = async {
        let response = stack.clone().oneshot(chat()).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
    .await;
    (result, start.elapsed())
}

fn refused(result: &Result<u16, BoxError>) -> Option<&CircuitOpen> {
    result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
}

/// Trips `stack`'s circuit with 529s (three in a row, counting those it saw before); the
/// scope, from its handle.
async fn trip(stack: &Stack, handle: &CircuitHandle, upstream: &Upstream) -> Scope {
    upstream.down.store(true, Ordering::SeqCst);
    loop {
        assert_eq!(call(stack).await.0.unwrap(), 529);
        let (scope, metrics) = handle.snapshot().pop().expect("one circuit");
        if metrics.state == CircuitState::Open {
            return scope;
        }
    }
}

/// Waits until `handle` shows `scope` in `state`, at most `within`: how long it took.
async fn until_state(
    handle: &CircuitHandle,
    scope: &Scope,
    state: CircuitState,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    while handle.state(scope) != state {
        assert!(
            start.elapsed() < within,
            "still {} after {within:?}, not {state}",
            handle.state(scope)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn keys(url: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_on_one_replica_refuses_on_all_within_the_sync_bound() {
    let server = RedisServer::start(&[]);
    let upstream = Upstream::new("10ms");
    let fleet = replicas(&server.url(), config(), &upstream).await;
    // Every replica knows the scope (a healthy call each).
    for (stack, _) in &fleet {
        assert_eq!(call(stack).await.0.unwrap(), 200);
    }
    let scope = trip(&fleet[0].0, &fleet[0].1, &upstream).await;
    let tripped = Instant::now();
    let reached = upstream.calls();
    for (stack, handle) in &fleet[1..] {
        let took = until_state(handle, &scope, CircuitState::Open, SYNC + SLACK).await;
        println!("another replica saw the open {took:?} after the trip");
        let (result, _) = call(stack).await;
        let open = refused(&result).expect("refused as if its own circuit were open");
        let wait = open.retry_after.expect("the open period's end");
        let left = Duration::from_secs(2).saturating_sub(tripped.elapsed());
        assert!(
            wait <= left + SLACK && wait + SLACK >= left,
            "{wait:?} vs {left:?}"
        );
    }
    assert_eq!(
        upstream.calls(),
        reached,
        "refused calls never reach the upstream"
    );
    // The key names the scope by its credential's id, never the secret.
    let keys = keys(&server.url()).await;
    assert!(
        keys.iter()
            .any(|k| k.starts_with("{tollgate:circuit}:openai/key-")),
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| !k.contains(SECRET)), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_exactly_the_probes_fleet_wide_and_their_success_closes_everywhere() {
    let server = RedisServer::start(&[]);
    // Probes take 800 ms: all still in flight while the crowd calls.
    let upstream = Upstream::new("800ms");
    let fleet = replicas(&server.url(), config(), &upstream).await;
    let scope = trip(&fleet[0].0, &fleet[0].1, &upstream).await;
    for (_, handle) in &fleet[1..] {
        until_state(handle, &scope, CircuitState::Open, SYNC + SLACK).await;
    }
    upstream.down.store(false, Ordering::SeqCst);
    let before = upstream.calls();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A crowd on every replica for 600 ms: a call every 10 ms each.
    let start = Instant::now();
    let mut crowd = Vec::new();
    while start.elapsed() < Duration::from_millis(600) {
        for (stack, _) in &fleet {
            let stack = stack.clone();
            crowd.push(tokio::spawn(async move { call(&stack).await }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let probes = upstream.calls() - before;
    println!(
        "{} calls in the first 600 ms of half-open, {probes} reached the upstream",
        crowd.len()
    );
    assert_eq!(
        probes, 2,
        "half_open_probes for the fleet, not per replica (that would be 6)"
    );
    let mut answered = 0;
    for task in crowd {
        let (result, _) = task.await.unwrap();
        match result {
            Ok(status) => {
                assert_eq!(status, 200);
                answered += 1;
            }
            Err(error) => assert!(error.is::<CircuitOpen>(), "{error}"),
        }
    }
    assert_eq!(answered, 2);
    // The two successes close the circuit in every replica.
    for (stack, handle) in &fleet {
        until_state(handle, &scope, CircuitState::Closed, SYNC + SLACK).await;
        assert_eq!(call(stack).await.0.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_reopens_for_everyone_for_longer() {
    let server = RedisServer::start(&[]);
    let upstream = Upstream::new("10ms");
    let config = CircuitConfig {
        half_open_probes: 1,
        ..config()
    };
    let fleet = replicas(&server.url(), config, &upstream).await;
    let scope = trip(&fleet[0].0, &fleet[0].1, &upstream).await;
    for (_, handle) in &fleet[1..] {
        until_state(handle, &scope, CircuitState::Open, SYNC + SLACK).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The last replica probes (its first call asks for a probe), and the probe fails.
    let (stack, _) = &fleet[2];
    let mut probe = None;
    let start = Instant::now();
    while probe.is_none() {
        assert!(start.elapsed() < Duration::from_secs(1), "no probe granted");
        if let (Ok(status), _) = call(stack).await {
            probe = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(probe, Some(529));
    let reopened = Instant::now();
    for (stack, _) in &fleet {
        // Until it hears of the new period, a replica whose open period ended is half-open,
        // refusing with a wait of one sync interval (when it may have a probe); then it
        // refuses for the rest of the new period.
        let wait = loop {
            let (result, _) = call(stack).await;
            let open = refused(&result).unwrap_or_else(|| panic!("not refused: {result:?}"));
            if let Some(wait) = open.retry_after.filter(|wait| *wait > SYNC) {
                break wait;
            }
            assert!(reopened.elapsed() < SYNC + SLACK, "no new open period");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The second trip in a row: 2 s × 2.
        let left = Duration::from_secs(4).saturating_sub(reopened.elapsed());
        assert!(
            wait + SLACK >= left && wait <= left + SLACK,
            "{wait:?} vs {left:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_open_on_one_replica_refuses_on_all_and_a_reset_on_another_closes_all() {
    let server = RedisServer::start(&[]);
    let upstream = Upstream::new("10ms");
    let fleet = replicas(&server.url(), config(), &upstream).await;
    let scope = fleet[0].1.snapshot().pop().unwrap().0;
    fleet[0].1.force_open(&scope);
    let reached = upstream.calls();
    for (stack, handle) in &fleet {
        until_state(handle, &scope, CircuitState::ForcedOpen, SYNC + SLACK).await;
        assert!(refused(&call(stack).await.0).is_some());
    }
    assert_eq!(upstream.calls(), reached);
    fleet[1].1.reset(&scope);
    for (stack, handle) in &fleet {
        until_state(handle, &scope, CircuitState::Closed, SYNC + SLACK).await;
        assert_eq!(call(stack).await.0.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_holds_no_call_breakers_work_alone_and_sharing_resumes() {
    let server = RedisServer::start(&[]);
    let upstream = Upstream::new("10ms");
    let config = CircuitConfig {
        open_duration: Duration::from_secs(5),
        ..config()
    };
    let fleet = replicas(&server.url(), config, &upstream).await;
    let scope = fleet[0].1.snapshot().pop().unwrap().0;

    server.pause();
    let paused = Instant::now();
    // Calls never wait on Redis, and its silence is no upstream failure.
    for _ in 0..10 {
        for (stack, handle) in &fleet {
            let (result, took) = call(stack).await;
            assert_eq!(result.unwrap(), 200);
            assert!(took < TIMEOUT, "a call took {took:?}");
            assert_eq!(handle.state(&scope), CircuitState::Closed);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // The first replica's own window still trips it; the others know nothing of it.
    let tripped = trip(&fleet[0].0, &fleet[0].1, &upstream).await;
    assert_eq!(tripped, scope);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, handle) in &fleet[1..] {
        assert_eq!(
            handle.state(&scope),
            CircuitState::Closed,
            "alone while redis is away"
        );
    }
    let (result, took) = call(&fleet[0].0).await;
    assert!(refused(&result).is_some() && took < TIMEOUT, "{took:?}");

    tokio::time::sleep(Duration::from_millis(1_500).saturating_sub(paused.elapsed())).await;
    server.resume();
    // Redis is tried again every second: the open is published, the others follow.
    for (_, handle) in &fleet[1..] {
        let took = until_state(handle, &scope, CircuitState::Open, Duration::from_secs(2)).await;
        println!("shared again {took:?} after redis resumed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_leaves_each_breaker_alone_and_a_restarted_one_shares_again() {
    let mut server = RedisServer::start(&[]);
    let upstream = Upstream::new("10ms");
    let fleet = replicas(&server.url(), config(), &upstream).await;
    server.kill();
    let scope = trip(&fleet[0].0, &fleet[0].1, &upstream).await;
    for (stack, handle) in &fleet[1..] {
        let (result, took) = call(stack).await;
        assert_eq!(result.unwrap(), 529);
        assert!(took < TIMEOUT, "{took:?}");
        assert_eq!(handle.state(&scope), CircuitState::Closed);
    }
    // Its open period ends alone: it probes on its own, and closes.
    upstream.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..2 {
        assert_eq!(call(&fleet[0].0).await.0.unwrap(), 200);
    }
    assert_eq!(fleet[0].1.state(&scope), CircuitState::Closed);

    server.restart();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Back to sharing: a trip on the second replica opens the others.
    let scope = trip(&fleet[1].0, &fleet[1].1, &upstream).await;
    for i in [0, 2] {
        until_state(
            &fleet[i].1,
            &scope,
            CircuitState::Open,
            Duration::from_secs(2),
        )
        .await;
    }
}
