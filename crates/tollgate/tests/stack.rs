//! The standard stack over the in-process simulator: chat, a streamed chat whose usage reaches
//! the layers when it ends, embeddings merged into one call, and a config file with flat keys
//! (`max_requests_per_minute`, `circuit_breaker.*`, ...). Paused time.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate::{LlmStack, StackConfig};
use tollgate_core::BoxError;
use tollgate_sim::{SimConfig, SimService};
use tower::ServiceExt;

fn sim() -> SimService {
    SimService::new(
        SimConfig::from_toml(
            "seed = 2\n[latency]\ntime_to_first_token = \"200ms\"\nper_output_token = \"5ms\"\n",
        )
        .unwrap(),
    )
    .unwrap()
}

fn post(path: &str, body: Value) -> Request<Full<Bytes>> {
    Request::post(format!("https://api.openai.com{path}"))
        .header("authorization", "Bearer sk-stack")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn client(
    sim: SimService,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<tollgate_sim::SimBody>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::ServiceBuilder::new()
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .service(sim)
}

#[tokio::test(start_paused = true)]
async fn chat_streams_and_embeddings_through_the_stack() {
    let sim = sim();
    let config = StackConfig::from_toml(
        r#"
        preset = "balanced"
        max_requests_per_minute = 600
        max_concurrent_requests = 16
        [circuit_breaker]
        failure_threshold = 5
        recovery_timeout = "30s"
        [backoff_strategy]
        max_retries = 3
        initial_delay = 1
        max_delay = 30
        [batch]
        max_batch_size = 64
        max_wait = "20ms"
    "#,
    )
    .unwrap();
    let (llm, handle) = LlmStack::new(&config).unwrap().service(client(sim.clone()));

    let chat = json!({"model": "gpt-4o-mini", "max_tokens": 32,
        "messages": [{"role": "user", "content": "hello"}]});
    let response = llm
        .clone()
        .oneshot(post("/v1/chat/completions", chat.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["object"], "chat.completion");

    // A stream arrives in chunks, not at once.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let response = llm
        .clone()
        .oneshot(post("/v1/chat/completions", streamed))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut frames = 0;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            text.extend_from_slice(&data);
        }
    }
    assert!(frames > 3, "{frames} frames");
    assert!(String::from_utf8_lossy(&text).ends_with("data: [DONE]\n\n"));

    // Twenty single-input embeddings at once: one upstream call.
    let before = sim.log().len();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let llm = llm.clone();
            tokio::spawn(async move {
                let embed = json!({"model": "text-embedding-3-small", "input": format!("doc {i}")});
                let response = llm.oneshot(post("/v1/embeddings", embed)).await.unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = serde_json::from_slice(
                    &response.into_body().collect().await.unwrap().to_bytes(),
                )
                .unwrap();
                body["data"].as_array().unwrap().len()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 1);
    }
    assert_eq!(sim.log().len() - before, 1, "merged into one call");

    // A deterministic request asked twice costs one call: the second is a cache hit.
    let exact = json!({"model": "gpt-4o-mini", "max_tokens": 16, "temperature": 0,
        "messages": [{"role": "user", "content": "the same question"}]});
    let before = sim.log().len();
    for _ in 0..2 {
        let response = llm
            .clone()
            .oneshot(post("/v1/chat/completions", exact.clone()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(sim.log().len() - before, 1);
    assert_eq!(handle.cache.as_ref().unwrap().snapshot().hits, 1);

    let health = handle.health();
    assert!(!health.is_empty());
    assert!(
        health
            .iter()
            .all(|h| h.circuit == tollgate::circuit::CircuitState::Closed)
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Every duration a config file can set, at the largest a `Duration` holds from a number of
/// seconds: the stack loads and serves — chat, a stream, embeddings, a failing upstream — with
/// no overflow anywhere (the fuzzer's `stack_config` target only loads configs).
#[tokio::test(start_paused = true)]
async fn the_largest_durations_a_config_allows_never_overflow() {
    let huge = "1.8e19";
    let text = |ttl: &str| {
        format!(
            r#"
            preset = "balanced"
            request_timeout = {huge}
            [circuit_breaker]
            failure_threshold = 1
            recovery_timeout = {huge}
            [backoff_strategy]
            max_retries = 1
            initial_delay = {huge}
            max_delay = {huge}
            [cache]
            ttl = {ttl}
            [timeouts]
            first_byte = {huge}
            idle = {huge}
            total = {huge}
            per_output_token = {huge}
            [batch]
            max_wait = "1ms"
        "#
        )
    };
    // The cache keeps entries at most 1,000 years (its store's bound): a clear error.
    let error = StackConfig::from_toml(&text(huge)).unwrap_err();
    assert!(error.field().starts_with("cache."), "{error}");
    assert!(error.reason().contains("1,000 years"), "{error}");
    let config = StackConfig::from_toml(&text("\"100y\"")).unwrap();
    let sim = sim();
    let (llm, handle) = LlmStack::new(&config).unwrap().service(client(sim.clone()));
    let chat = json!({"model": "gpt-4o-mini", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}]});
    let response = llm
        .clone()
        .oneshot(post("/v1/chat/completions", chat))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let stream = json!({"model": "gpt-4o-mini", "max_tokens": 8, "stream": true,
        "messages": [{"role": "user", "content": "hello again"}]});
    let response = llm
        .clone()
        .oneshot(post("/v1/chat/completions", stream))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    let embeddings = json!({"model": "text-embedding-3-small", "input": "one"});
    let response = llm
        .clone()
        .oneshot(post("/v1/embeddings", embeddings))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A model the simulator does not know fails: the breaker opens for "1.8e19 s".
    let unknown = json!({"model": "no-such-model", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}]});
    let _ = llm
        .clone()
        .oneshot(post("/v1/chat/completions", unknown))
        .await;
    assert!(!handle.health().is_empty());
}

/// A key with no rate-limit headers: a burst past its limit meets 429s.
fn no_header_sim() -> SimService {
    SimService::new(
        SimConfig::from_toml(
            "seed = 4\n[[keys]]\nkey = \"sk-stack\"\nrequests_per_minute = 600\nburst = 5\n\
             rate_limit_headers = false\n",
        )
        .unwrap(),
    )
    .unwrap()
}

/// The requests limit `health()` shows, and where it comes from.
fn requests_limit(handle: &tollgate::StackHandle) -> Option<(String, f64)> {
    handle.health().iter().find_map(|s| {
        s.rate_limits
            .iter()
            .find(|l| l.dimension == tollgate::ratelimit::Dimension::Requests)
            .map(|l| (l.source.as_str().to_owned(), l.per_minute))
    })
}

#[tokio::test(start_paused = true)]
async fn a_limit_is_learned_from_429s_unless_the_config_says_not_to() {
    for (toml, learned) in [("", true), ("learn_limits = false", false)] {
        let sim = no_header_sim();
        let stack = LlmStack::new(&StackConfig::from_toml(toml).unwrap()).unwrap();
        let (llm, handle) = stack.service(client(sim));
        // Each caller reads its answer to the end: an unread body holds its permits.
        let calls: Vec<_> = (0..20)
            .map(|n| {
                let request = post(
                    "/v1/chat/completions",
                    json!({"model": "gpt-4o-mini", "max_tokens": 4,
                        "messages": [{"role": "user", "content": format!("hi {n}")}]}),
                );
                let llm = llm.clone();
                tokio::spawn(async move {
                    let response = llm.oneshot(request).await.unwrap();
                    let status = response.status();
                    response.into_body().collect().await.unwrap();
                    status
                })
            })
            .collect();
        for call in calls {
            let status = call.await.unwrap();
            // Paced at what was learned, every caller is answered.
            assert!(!learned || status.is_success(), "{status}");
        }
        match (learned, requests_limit(&handle)) {
            (true, Some((source, per_minute))) => {
                assert_eq!(source, "refusals");
                assert!(per_minute > 0.0);
            }
            (false, None) => {}
            (_, got) => panic!("{toml:?}: {got:?}"),
        }
    }
}

/// A small chat completion of `model` through `llm`, which must answer 200; its whole body.
async fn ask(llm: &tollgate::LlmService, model: &str, stream: bool) -> Bytes {
    let chat = json!({"model": model, "max_tokens": 8, "stream": stream,
        "messages": [{"role": "user", "content": "hello"}]});
    let response = llm
        .clone()
        .oneshot(post("/v1/chat/completions", chat))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{model}");
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Every layer can be left out: the stack then has neither the layer nor its handle, and
/// still answers (streams included) through the layers that are left.
#[tokio::test(start_paused = true)]
async fn layers_switched_off_are_absent_and_the_rest_still_answers() {
    for off in [
        "cache",
        "batch",
        "retry",
        "circuit_breaker",
        "overload",
        "rate_limit",
        "concurrency",
        "timeouts",
    ] {
        let sim = sim();
        let config = StackConfig::from_toml(&format!("[{off}]\nenabled = false\n")).unwrap();
        let (llm, handle) = LlmStack::new(&config).unwrap().service(client(sim.clone()));
        for stream in [false, true] {
            let body = ask(&llm, "gpt-4o-mini", stream).await;
            assert!(!body.is_empty(), "[{off}] off");
        }
        assert_eq!(handle.cache.is_some(), off != "cache");
        assert_eq!(handle.circuit.is_some(), off != "circuit_breaker");
        assert_eq!(handle.overload.is_some(), off != "overload");
        assert_eq!(handle.rate_limits.is_some(), off != "rate_limit");
        assert_eq!(sim.log().len(), 2, "[{off}] off");
    }
}

/// `max_scopes` bounds what every layer keeps per scope: many models through a stack that
/// keeps 2 leave at most 2 scopes in each layer.
#[tokio::test(start_paused = true)]
async fn max_scopes_bounds_every_layers_state() {
    let sim = sim();
    let config = StackConfig::from_toml("max_scopes = 2\n").unwrap();
    assert_eq!(config.max_scopes, 2);
    let (llm, handle) = LlmStack::new(&config).unwrap().service(client(sim));
    for model in [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "gpt-4.1",
        "o3-mini",
    ] {
        ask(&llm, model, false).await;
    }
    assert!(handle.rate_limits.as_ref().unwrap().len() <= 2);
    assert!(handle.circuit.as_ref().unwrap().snapshot().len() <= 2);
    assert!(handle.overload.as_ref().unwrap().snapshot().len() <= 2);
    let error = StackConfig::from_toml("max_scopes = 0\n").unwrap_err();
    assert_eq!(error.field(), "max_scopes");
}

/// Settings changed in code are checked as a file's are: a Redis section the stack is not
/// connected to is refused, not silently run without its limits.
#[test]
fn configure_refuses_what_the_stack_cannot_run() {
    let error = LlmStack::preset(tollgate::Preset::Balanced)
        .configure(|c| {
            c.rate_limit.as_mut().unwrap().redis = Some(
                tollgate::core::config::RedisSettings::from_url_env("REDIS_URL"),
            );
        })
        .unwrap_err();
    assert_eq!(error.field(), "rate_limit.redis");
    let error = LlmStack::preset(tollgate::Preset::Balanced)
        .configure(|c| {
            c.redis = Some(tollgate::core::config::RedisSettings::from_url(
                "redis://127.0.0.1:6379".to_owned(),
            ));
        })
        .unwrap_err();
    assert_eq!(error.field(), "redis", "[redis] shares the rate limits");
    let error = LlmStack::preset(tollgate::Preset::Balanced)
        .configure(|c| c.fallback = Some(tollgate::fallback::FallbackConfig::default()))
        .unwrap_err();
    assert_eq!(
        error.field(),
        "fallback",
        "stale answers need cache.max_staleness"
    );
}
