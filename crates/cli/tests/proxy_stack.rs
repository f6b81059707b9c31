//! The gateway's `[stack]` reaches every layer `StackConfig` composes: a pool of keys on two
//! upstreams with a fallback tier, rate limits kept in a real redis-server, and stale answers
//! from the cache while every member is down. Keys come from the environment; none is logged.

mod support;

use http::StatusCode;
use tollgate_sim::{Sim, SimConfig, SimHandle};
use tollgate_testkit::redis::RedisServer;

use support::{CLIENT_KEY, Proxy, bearer, call, config, get, post, send};

const ONE: &str = "sk-pool-one-5d1e";
const TWO: &str = "sk-pool-two-a7c2";
const BACKUP: &str = "sk-pool-backup-90be";
const ADMIN: &str = "adm-pool-61f0c2";

async fn upstream(keys: &[(&str, &str)]) -> SimHandle {
    let mut text = String::from("[latency]\ntime_to_first_token = \"5ms\"\n");
    for (key, name) in keys {
        text.push_str(&format!("[[keys]]\nkey = \"{key}\"\nname = \"{name}\"\n"));
    }
    Sim::start(SimConfig::from_toml(&text).unwrap())
        .await
        .unwrap()
}

fn question(prompt: &str) -> serde_json::Value {
    serde_json::json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 8,
        "messages": [{"role": "user", "content": prompt}]})
}

fn stack(primary: &str, backup: &str) -> String {
    format!(
        r#"[stack]
preset = "balanced"
[stack.retry]
max_attempts = 1
[stack.cache]
max_staleness = "10m"
[stack.fallback]
[stack.rate_limit.redis]
url_env = "TG_POOL_REDIS"
[stack.pool]
policy = "ordered"
when_exhausted = "fail"
[[stack.pool.members]]
name = "one"
provider = "openai"
base_url = "{primary}"
key_env = "TG_POOL_ONE"
[[stack.pool.members]]
name = "two"
provider = "openai"
base_url = "{primary}"
key_env = "TG_POOL_TWO"
[[stack.pool.members]]
name = "backup"
provider = "openai"
base_url = "{backup}"
key_env = "TG_POOL_BACKUP"
tier = 1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_routes_through_a_pool_with_redis_limits_and_stale_answers() {
    let redis = RedisServer::start(&[]);
    let primary = upstream(&[(ONE, "one"), (TWO, "two")]).await;
    let backup = upstream(&[(BACKUP, "backup")]).await;
    let text = format!(
        "[server]\nadmin_token_env = \"TG_POOL_ADMIN\"\nclient_cache_headers = true\n{}",
        config(&primary.url(), &stack(&primary.url(), &backup.url()))
            .strip_prefix("[server]\n")
            .unwrap()
    );
    let proxy = Proxy::start_with_env(
        &text,
        &[
            ("TG_POOL_ONE", ONE),
            ("TG_POOL_TWO", TWO),
            ("TG_POOL_BACKUP", BACKUP),
            ("TG_POOL_REDIS", &redis.url()),
            ("TG_POOL_ADMIN", ADMIN),
        ],
    );
    let ask = |prompt: &str| {
        let body = question(prompt);
        let proxy = &proxy;
        async move { call(proxy, "/v1/chat/completions", bearer(CLIENT_KEY), &body).await }
    };

    let first = ask("hello").await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let log = primary.log();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].key.as_deref(),
        Some("one"),
        "the pool's first member, with its key"
    );

    primary.shutdown().await;
    let moved = ask("a new question").await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(backup.log().len(), 1, "the fallback tier answered");

    // `/admin/health` shows each member: the first two failed to connect, the backup served.
    let mut request = get(&format!("{}/admin/health", proxy.url));
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {ADMIN}").parse().unwrap(),
    );
    let health = send(request).await.json();
    let members = health["pool"].as_array().expect("the pool's members");
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two", "backup"]);
    assert_eq!(members[0]["successes"], 1);
    assert_eq!(members[2]["successes"], 1);
    assert_eq!(members[2]["tier"], 1);
    assert!(members[0]["calls"].as_u64().unwrap() >= 2, "{members:?}");

    // Every member down: a client who asks for a fresh answer gets the stored one, marked.
    backup.shutdown().await;
    let auth = format!("Bearer {CLIENT_KEY}");
    let mut fresh = post(
        &format!("{}/v1/chat/completions", proxy.url),
        Some(("authorization", &auth)),
        &question("hello"),
    );
    fresh.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    let stale = send(fresh).await;
    assert_eq!(stale.status, StatusCode::OK, "{:?}", stale.body);
    assert_eq!(stale.header("x-tollgate-cache"), "stale");
    assert_eq!(stale.body, first.body);
    proxy.assert_no_secret_logged();
    for key in [ONE, TWO, BACKUP] {
        assert!(!proxy.log().contains(key));
    }
}
