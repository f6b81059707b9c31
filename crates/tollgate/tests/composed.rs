//! One TOML file builds the whole stack a team runs: a pool of three keys on two providers
//! (two OpenAI keys, an Azure OpenAI deployment as the fallback tier), rate limits and the
//! cache's second level kept in a real redis-server, and stale answers from the cache when
//! every member is down. It runs
//! over loopback against two `tollgate sim` servers, as an application would.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tollgate::{LlmService, LlmStack, StackConfig};
use tollgate_sim::{Sim, SimConfig, SimHandle};
use tollgate_testkit::redis::RedisServer;
use tower::ServiceExt;

const CONFIG: &str = r#"
preset = "balanced"
seed = 7

[rate_limit]
max_wait = "2s"
[rate_limit.quotas]
requests_per_minute = 600
[rate_limit.redis]
url_env = "TEAM_REDIS_URL"

[retry]
max_attempts = 2
initial_delay = "10ms"
max_delay = "50ms"

[cache]
max_staleness = "10m"
[cache.redis]                 # a second level shared by every replica
url_env = "TEAM_REDIS_URL"

[fallback]
triggers = ["connect_error", "circuit_open", "overloaded", "server_error", "timeout"]

[pool]
policy = "ordered"
when_exhausted = "fail"

[[pool.members]]
name = "openai-a"
provider = "openai"
base_url = "OPENAI_URL"
key_env = "OPENAI_KEY_A"

[[pool.members]]
name = "openai-b"
provider = "openai"
base_url = "OPENAI_URL"
key_env = "OPENAI_KEY_B"
requests_per_minute = 120

[[pool.members]]
name = "azure-eastus"
provider = "azure"
base_url = "AZURE_URL"
key_env = "AZURE_KEY"
deployment = "gpt-4o-mini"
api_version = "2024-10-21"
tier = 1
"#;

async fn sim(keys: &[(&str, &str)]) -> SimHandle {
    let mut text = String::from("seed = 3\n[latency]\ntime_to_first_token = \"5ms\"\n");
    for (key, name) in keys {
        text.push_str(&format!("[[keys]]\nkey = \"{key}\"\nname = \"{name}\"\n"));
    }
    Sim::start(SimConfig::from_toml(&text).unwrap())
        .await
        .unwrap()
}

fn chat(url: &str, prompt: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 8,
        "messages": [{"role": "user", "content": prompt}]});
    Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn send(llm: &LlmService, request: Request<Full<Bytes>>) -> http::Response<Bytes> {
    let response = llm.clone().oneshot(request).await.expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a whole body").to_bytes();
    http::Response::from_parts(parts, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_builds_a_pool_on_two_providers_with_redis_limits_and_stale_answers() {
    let redis = RedisServer::start(&[]);
    let openai = sim(&[("sk-team-a", "a"), ("sk-team-b", "b")]).await;
    let azure = sim(&[("az-team", "azure")]).await;
    let text = CONFIG
        .replace("OPENAI_URL", &openai.url())
        .replace("AZURE_URL", &azure.url());
    let config = StackConfig::from_toml(&text).unwrap();
    let env = |name: &str| match name {
        "TEAM_REDIS_URL" => Some(redis.url()),
        "OPENAI_KEY_A" => Some("sk-team-a".to_owned()),
        "OPENAI_KEY_B" => Some("sk-team-b".to_owned()),
        "AZURE_KEY" => Some("az-team".to_owned()),
        _ => None,
    };
    assert!(
        LlmStack::new(&config).is_err(),
        "Redis limits need a connection"
    );
    let stack = LlmStack::connect_with_env(&config, &env).await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (llm, handle) = stack.service(client);
    let addressed = openai.url();

    // Healthy: the first member answers, with its own key; the limits live in Redis.
    let first = send(&llm, chat(&addressed, "hello")).await;
    assert_eq!(first.status(), 200, "{:?}", first.body());
    let log = openai.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].key.as_deref(), Some("a"));
    assert!(
        !redis.keys("*").is_empty(),
        "the rate limits are kept in Redis"
    );
    let members = handle.pool.as_ref().unwrap().snapshot();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_ref()).collect();
    assert_eq!(names, ["openai-a", "openai-b", "azure-eastus"]);

    // The OpenAI host goes down: both its keys fail to connect, Azure's tier takes over.
    openai.shutdown().await;
    let moved = send(&llm, chat(&addressed, "a new question")).await;
    assert_eq!(moved.status(), 200, "{:?}", moved.body());
    let log = azure.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].key.as_deref(), Some("azure"));
    assert!(
        log[0].route.contains("/openai/deployments/gpt-4o-mini/"),
        "{}",
        log[0].route
    );

    // Every member down: a caller who asks for a fresh answer (`no-cache`) gets the stored one
    // instead, marked stale and degraded.
    azure.shutdown().await;
    let mut fresh = chat(&addressed, "hello");
    fresh.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    let stale = send(&llm, fresh).await;
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-tollgate-cache"], "stale");
    assert!(stale.headers().contains_key("x-tollgate-degraded"));
    assert_eq!(stale.body(), first.body());

    // A question nobody answered before has no stale answer: the failure reaches the caller.
    let error = llm
        .clone()
        .oneshot(chat(&addressed, "never asked"))
        .await
        .map(|r| r.status());
    assert!(
        error.as_ref().is_err() || error.as_ref().is_ok_and(|s| !s.is_success()),
        "{error:?}"
    );
}
