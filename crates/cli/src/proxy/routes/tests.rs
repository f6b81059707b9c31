//! The gateway's model groups in-process, under paused time: the gateway's request path (key
//! check, body, routing, the groups' stacks, fallbacks) over simulated providers, one per
//! host, so minutes of traffic take milliseconds. The same config through a real process and
//! real sockets is in `tests/proxy_models.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tollgate_core::BoxError;
use tollgate_sim::{SimConfig, SimService};
use tower::ServiceExt;

use super::{Routes, SpendFile};
use crate::proxy::admin::group_json;
use crate::proxy::config;
use crate::proxy::forward::{Gateway, forward};
use crate::proxy::metrics::{Metrics, builder};

/// Simulated providers by host name.
type Hosts = Arc<HashMap<&'static str, SimService>>;

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid sim")
}

/// The gateway's client: each request to the simulator of its host.
fn client(
    hosts: Hosts,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<tollgate::LlmBody>,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let sim = request
            .uri()
            .host()
            .and_then(|host| hosts.get(host))
            .cloned();
        let too_long = request.uri().host() == Some("small-context.test");
        async move {
            match sim {
                Some(sim) => Ok(sim
                    .oneshot(request)
                    .await
                    .expect("infallible")
                    .map(|body| body.map_err(Into::into).boxed_unsync())),
                // A model whose window every prompt is over: OpenAI's 400.
                None if too_long => Ok(context_length_exceeded()),
                None => Err(BoxError::from("connection refused: no such host")),
            }
        }
    })
}

fn context_length_exceeded() -> http::Response<tollgate::LlmBody> {
    let body = json!({"error": {
        "message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }});
    http::Response::builder()
        .status(400)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(Into::into)
                .boxed_unsync(),
        )
        .unwrap()
}

async fn gateway(text: &str, vars: &[(&str, &str)], hosts: &Hosts) -> Arc<Gateway> {
    gateway_keeping(text, vars, hosts, &SpendFile::default()).await
}

/// [`gateway`], keeping spend in `spend`.
async fn gateway_keeping(
    text: &str,
    vars: &[(&str, &str)],
    hosts: &Hosts,
    spend: &SpendFile,
) -> Arc<Gateway> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env = move |name: &str| vars.get(name).cloned();
    let config = config::parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
    let routes = Routes::build(&config, &client(hosts.clone()), None, spend, &env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new(builder().build_recorder().handle()));
    Arc::new(Gateway::new(&config, routes, metrics))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(gateway: &Arc<Gateway>, request: Request<Body>) -> Answer {
    let response = forward(State(gateway.clone()), request).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("a whole body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn post(gateway: &Arc<Gateway>, path: &str, body: &Value) -> Answer {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(gateway, request).await
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello."}]})
}

/// A group over three keys of one OpenAI account, 200 requests a minute each.
const THREE_KEYS: &str = r#"
[stack]
preset = "balanced"
[[models]]
name = "chat"
[[models.deployments]]
name = "openai"
provider = "openai"
base_url = "http://openai.test"
keys_env = "OPENAI_KEYS"
model = "gpt-4o-mini"
requests_per_minute = 200
"#;

fn three_keys(extra: &str) -> SimService {
    let mut text = String::from("[latency]\ntime_to_first_token = \"300ms\"\n");
    for (key, name) in [("sk-a", "a"), ("sk-b", "b"), ("sk-c", "c")] {
        text.push_str(&format!(
            "[[keys]]\nkey = \"{key}\"\nname = \"{name}\"\nrequests_per_minute = 200\n"
        ));
        if name == "c" {
            text.push_str(extra);
        }
    }
    sim(&text)
}

/// Offers `per_minute` requests a minute to `model` for `minutes`, open loop; the statuses.
async fn offer(gateway: &Arc<Gateway>, model: &str, per_minute: u64, minutes: u64) -> Vec<u16> {
    let gap = Duration::from_secs(60) / u32::try_from(per_minute).unwrap();
    let mut calls = JoinSet::new();
    for _ in 0..per_minute * minutes {
        let gateway = gateway.clone();
        let body = chat(model);
        calls.spawn(async move {
            let answer = post(&gateway, "/v1/chat/completions", &body).await;
            assert!(
                answer.status != StatusCode::OK
                    || answer.headers.contains_key("x-tollgate-deployment"),
                "an answer names its deployment: {:?}",
                answer.headers
            );
            answer.status.as_u16()
        });
        tokio::time::sleep(gap).await;
    }
    let mut statuses = Vec::new();
    while let Some(status) = calls.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(start_paused = true)]
async fn three_keys_of_200_rpm_carry_500_rpm_without_a_429() {
    let openai = three_keys("");
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    let gateway = gateway(THREE_KEYS, &[("OPENAI_KEYS", "sk-a,sk-b,sk-c")], &hosts).await;
    let statuses = offer(&gateway, "chat", 500, 3).await;
    assert_eq!(statuses.len(), 1500);
    assert_eq!(
        count(&statuses, 200),
        1500,
        "every call answered: {statuses:?}"
    );
    let log = openai.log();
    let refused: Vec<_> = log.iter().filter(|e| e.status != 200).collect();
    assert!(
        refused.is_empty(),
        "each key kept to its own limit: {refused:?}"
    );
    let per_key: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|key| {
            log.iter()
                .filter(|e| e.key.as_deref() == Some(*key))
                .count()
        })
        .collect();
    println!("1500 calls, all answered; served by keys a, b, c: {per_key:?}, none refused");
    for key in ["a", "b", "c"] {
        let served = log.iter().filter(|e| e.key.as_deref() == Some(key)).count();
        // 600 a minute at most: 200 of the first minute's burst, then 200 a minute.
        assert!((300..=800).contains(&served), "key {key} served {served}");
        assert!(
            log.iter()
                .filter(|e| e.key.as_deref() == Some(key))
                .all(|e| e.model.as_deref() == Some("gpt-4o-mini")),
            "the deployment's model went upstream"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_revoked_mid_run_fails_over_within_each_call_and_cools_down_an_hour() {
    let openai = three_keys("revoked_after = \"60s\"\n");
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    let gateway = gateway(THREE_KEYS, &[("OPENAI_KEYS", "sk-a,sk-b,sk-c")], &hosts).await;
    let statuses = offer(&gateway, "chat", 300, 2).await;
    assert_eq!(
        count(&statuses, 200),
        600,
        "no client call failed: {statuses:?}"
    );
    let revoked = openai
        .log()
        .iter()
        // A refused key is not named in the log: the simulator does not know it any more.
        .filter(|e| e.status == 401)
        .count();
    assert!(revoked >= 1, "the revoked key was tried");
    let routes = gateway.routes();
    let group = group_json(&routes.all()[0]);
    let members = group["members"].as_array().unwrap();
    let c = members
        .iter()
        .find(|m| m["name"] == "chat/openai-3")
        .unwrap_or_else(|| panic!("{group}"));
    assert_eq!(c["state"], "cooling_down", "{c}");
    assert_eq!(c["reason"], "auth_error", "{c}");
    let left = c["cooldown_left_ms"].as_u64().unwrap();
    assert!(left > 55 * 60 * 1000, "about an hour left: {left} ms");
    assert_eq!(revoked, 1, "one 401, then the key is out of rotation");
}

const TWO_GROUPS: &str = r#"
[server]
api_keys = ["tg-client"]
[stack]
preset = "balanced"
[stack.retry]
max_attempts = 2
[[models]]
name = "chat"
fallbacks = ["backup"]
[[models.deployments]]
name = "openai"
provider = "openai"
base_url = "http://openai.test"
key_env = "OPENAI_KEY"
model = "gpt-4o-mini"
[[models]]
name = "backup"
[[models.deployments]]
name = "azure-eastus"
provider = "azure"
base_url = "http://azure.test"
key_env = "AZURE_KEY"
deployment = "gpt-4o-mini-prod"
api_version = "2024-10-21"
[[models]]
name = "claude"
[[models.deployments]]
provider = "anthropic"
base_url = "http://anthropic.test"
key_env = "ANTHROPIC_KEY"
model = "claude-3-5-haiku-latest"
"#;

const TWO_GROUPS_ENV: [(&str, &str); 3] = [
    ("OPENAI_KEY", "sk-openai"),
    ("AZURE_KEY", "az-key"),
    ("ANTHROPIC_KEY", "sk-ant"),
];

fn providers(openai_faults: &str) -> (Hosts, SimService, SimService, SimService) {
    let openai = sim(&format!(
        "[[keys]]\nkey = \"sk-openai\"\nname = \"openai\"\n{openai_faults}"
    ));
    let azure = sim("[[keys]]\nkey = \"az-key\"\nname = \"azure\"\n");
    let anthropic = sim("[[keys]]\nkey = \"sk-ant\"\nname = \"anthropic\"\n");
    let hosts: Hosts = Arc::new(HashMap::from([
        ("openai.test", openai.clone()),
        ("azure.test", azure.clone()),
        ("anthropic.test", anthropic.clone()),
    ]));
    (hosts, openai, azure, anthropic)
}

async fn authed(
    gateway: &Arc<Gateway>,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::post(path).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(gateway, request.body(Body::from(body.to_string())).unwrap()).await
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_group_falls_back_and_the_answer_names_its_deployment() {
    let (hosts, openai, azure, anthropic) = providers("[faults]\noverload_rate = 1.0\n");
    let gateway = gateway(TWO_GROUPS, &TWO_GROUPS_ENV, &hosts).await;
    let bearer = [("authorization", "Bearer tg-client")];
    let answer = authed(&gateway, "/v1/chat/completions", &chat("chat"), &bearer).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.headers["x-tollgate-deployment"],
        "backup/azure-eastus"
    );
    assert_eq!(answer.headers["x-tollgate-degraded"], "overloaded");
    assert_eq!(
        openai.log().len(),
        1,
        "tried once, then straight to the fallback: no retries first ([stack.retry] has 2)"
    );
    let served = azure.log();
    assert_eq!(served.len(), 1);
    assert!(
        served[0].route.contains("gpt-4o-mini-prod"),
        "{:?}",
        served[0]
    );

    // Anthropic's API reaches its group, and only its group.
    let messages = json!({"model": "claude", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hi"}]});
    let answer = authed(
        &gateway,
        "/v1/messages",
        &messages,
        &[("x-api-key", "tg-client")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.headers["x-tollgate-deployment"],
        "claude/anthropic-0"
    );
    assert_eq!(answer.body["model"], "claude-3-5-haiku-latest");
    assert_eq!(anthropic.log()[0].key.as_deref(), Some("anthropic"));
    let wrong = authed(&gateway, "/v1/chat/completions", &chat("claude"), &bearer).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
    assert!(
        wrong.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/messages")
    );

    // An unknown model: OpenAI's 404, naming the model and the groups.
    let unknown = authed(&gateway, "/v1/chat/completions", &chat("gpt-5"), &bearer).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], "model_not_found");
    assert_eq!(unknown.body["error"]["param"], "model");
    let message = unknown.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gpt-5") && message.contains("chat, backup, claude"),
        "{message}"
    );

    // The groups, in OpenAI's list.
    let request = Request::get("/v1/models")
        .header("authorization", "Bearer tg-client")
        .body(Body::empty())
        .unwrap();
    let list = send(&gateway, request).await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "backup", "claude"]);
    assert_eq!(list.body["object"], "list");
    // Not without the gateway key; an Anthropic SDK is refused in Anthropic's shape.
    let request = Request::get("/v1/models").body(Body::empty()).unwrap();
    assert_eq!(
        send(&gateway, request).await.status,
        StatusCode::UNAUTHORIZED
    );
    let request = Request::get("/v1/models")
        .header("x-api-key", "tg-wrong")
        .header("anthropic-version", "2023-06-01")
        .body(Body::empty())
        .unwrap();
    let refused = send(&gateway, request).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["type"], "error", "{}", refused.body);
    let request = Request::get("/v1/models")
        .header("x-api-key", "tg-client")
        .header("anthropic-version", "2023-06-01")
        .body(Body::empty())
        .unwrap();
    let listed = send(&gateway, request).await;
    assert_eq!(listed.body["data"][2]["type"], "model", "{}", listed.body);
    assert_eq!(listed.body["last_id"], "claude");
}

#[tokio::test(start_paused = true)]
async fn a_group_with_every_member_out_past_the_deadline_is_a_503_with_retry_after() {
    let openai = three_keys("");
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    // Keys the provider does not know: each is refused once, then out for an hour.
    let gateway = gateway(THREE_KEYS, &[("OPENAI_KEYS", "sk-x,sk-y,sk-z")], &hosts).await;
    let first = post(&gateway, "/v1/chat/completions", &chat("chat")).await;
    assert_eq!(
        first.status,
        StatusCode::UNAUTHORIZED,
        "the provider's answer"
    );
    let out = post(&gateway, "/v1/chat/completions", &chat("chat")).await;
    assert_eq!(out.status, StatusCode::SERVICE_UNAVAILABLE, "{}", out.body);
    let wait: u64 = out.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        wait > 3000,
        "the earliest member is back in about an hour: {wait}"
    );
    let message = out.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("every deployment of \"chat\""),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_passthrough_group_sends_the_clients_own_key() {
    let openai = three_keys("");
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    let config = r#"
[server]
api_keys = ["tg-client"]
[[models]]
name = "mine"
auth = "passthrough"
[[models.deployments]]
provider = "openai"
base_url = "http://openai.test"
model = "gpt-4o-mini"
"#;
    let gateway = gateway(config, &[], &hosts).await;
    let both = [
        ("x-tollgate-key", "tg-client"),
        ("authorization", "Bearer sk-b"),
    ];
    let answer = authed(&gateway, "/v1/chat/completions", &chat("mine"), &both).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers["x-tollgate-deployment"], "mine/openai-0");
    assert_eq!(
        openai.log()[0].key.as_deref(),
        Some("b"),
        "the client's own key"
    );
    // The gateway key alone names no provider key.
    let alone = [("authorization", "Bearer tg-client")];
    let refused = authed(&gateway, "/v1/chat/completions", &chat("mine"), &alone).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-tollgate-key")
    );
    // Each client key is a scope of its own: a wrong one is the provider's 401, and the
    // next client's key still works.
    let wrong = [
        ("x-tollgate-key", "tg-client"),
        ("authorization", "Bearer sk-q"),
    ];
    let answer = authed(&gateway, "/v1/chat/completions", &chat("mine"), &wrong).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let other = [
        ("x-tollgate-key", "tg-client"),
        ("authorization", "Bearer sk-c"),
    ];
    let answer = authed(&gateway, "/v1/chat/completions", &chat("mine"), &other).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

/// The share of prompt tokens the provider served from its prompt cache, over eight
/// conversations of ten turns, each with a long system prompt of its own, with or without
/// `[models.affinity]`.
async fn cached_share(affinity: &str) -> f64 {
    let openai = three_keys("");
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    let config = format!("{THREE_KEYS}{affinity}");
    let gateway = gateway(&config, &[("OPENAI_KEYS", "sk-a,sk-b,sk-c")], &hosts).await;
    for turn in 0..10 {
        for session in 0..8 {
            let system =
                format!("You help with project {session}, carefully and briefly. ").repeat(150);
            let body = json!({"model": "chat", "max_tokens": 8, "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("Question {turn} about project {session}?")},
            ]});
            let request = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .header("x-session-id", format!("session-{session}"))
                .body(Body::from(body.to_string()))
                .unwrap();
            let answer = send(&gateway, request).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        }
    }
    openai.stats().cached_share()
}

#[tokio::test(start_paused = true)]
async fn prompt_cache_affinity_keeps_a_conversation_where_its_prompt_is_cached() {
    let spread = cached_share("").await;
    let by_session = cached_share("[models.affinity]\nheader = \"x-session-id\"\n").await;
    let by_prefix = cached_share("[models.affinity]\nuser = false\nprefix_bytes = 4096\n").await;
    println!(
        "cached share of prompt tokens: {:.1} % spread over three keys, {:.1} % by session, \
         {:.1} % by prompt prefix",
        spread * 100.0,
        by_session * 100.0,
        by_prefix * 100.0
    );
    // Each conversation's first turn is a miss; kept on one key, every other turn hits.
    assert!(by_session > 0.85, "{by_session}");
    assert!(by_prefix > 0.85, "{by_prefix}");
    assert!(spread < by_session - 0.1, "{spread} vs {by_session}");
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_state_of_groups_whose_settings_did_not_change() {
    let (hosts, _openai, _azure, _anthropic) = providers("");
    let env: HashMap<String, String> = TWO_GROUPS_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env = move |name: &str| env.get(name).cloned();
    let gateway = gateway(TWO_GROUPS, &TWO_GROUPS_ENV, &hosts).await;
    let bearer = [("authorization", "Bearer tg-client")];
    for model in ["chat", "claude"] {
        let path = if model == "claude" {
            "/v1/messages"
        } else {
            "/v1/chat/completions"
        };
        let answer = authed(&gateway, path, &chat(model), &bearer).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let calls = |routes: &Routes, group: usize| {
        let pool = routes.all()[group].handle.pool.as_ref().unwrap();
        pool.snapshot()[0].counters.calls
    };
    let before = gateway.routes();
    assert_eq!((calls(&before, 0), calls(&before, 2)), (1, 1));
    // "claude" changes; "chat" and "backup" do not.
    let changed = TWO_GROUPS.replace("claude-3-5-haiku-latest", "claude-sonnet-4-5");
    let config = config::parse(&changed, &env).unwrap();
    let routes = Routes::build(
        &config,
        &client(hosts.clone()),
        Some(&before),
        &SpendFile::default(),
        &env,
    )
    .await
    .unwrap();
    gateway.replace(routes);
    let after = gateway.routes();
    assert_eq!(calls(&after, 0), 1, "chat kept its pool and its counts");
    assert_eq!(calls(&after, 2), 0, "claude's pool is new");
    let answer = authed(&gateway, "/v1/chat/completions", &chat("chat"), &bearer).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(calls(&gateway.routes(), 0), 2);
    // Requests that started on the old routes hold them: the old pool is still there.
    assert_eq!(calls(&before, 2), 1);
}

#[tokio::test(start_paused = true)]
async fn a_prompt_over_the_context_window_goes_down_the_chain_to_a_larger_one() {
    let openai = three_keys("");
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    let config = r#"
[[models]]
name = "small"
context_window = 8192
fallbacks = ["medium", "large"]
[[models.deployments]]
provider = "openai"
base_url = "http://small-context.test"
key_env = "SMALL_KEY"
model = "gpt-small"
[[models]]
name = "medium"
context_window = 4096
[[models.deployments]]
provider = "openai"
base_url = "http://small-context.test"
key_env = "SMALL_KEY"
model = "gpt-smaller"
[[models]]
name = "large"
context_window = 128000
[[models.deployments]]
provider = "openai"
base_url = "http://openai.test"
key_env = "LARGE_KEY"
model = "gpt-4o-mini"
"#;
    let gateway = gateway(
        config,
        &[("SMALL_KEY", "sk-s"), ("LARGE_KEY", "sk-a")],
        &hosts,
    )
    .await;
    let answer = post(&gateway, "/v1/chat/completions", &chat("small")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers["x-tollgate-deployment"], "large/openai-0");
    assert_eq!(answer.headers["x-tollgate-degraded"], "invalid_request");
    // Not to a smaller window: "medium" has nowhere larger to go, so its client hears why.
    let answer = post(&gateway, "/v1/chat/completions", &chat("medium")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["code"], "context_length_exceeded");
}

const TENANTS: &str = r#"
[server]
api_keys = ["tg-anonymous"]
[stack]
preset = "balanced"
max_concurrent_requests = 8
[stack.overload]
initial_limit = 8
[[tenants]]
name = "search-team"
key_env = "TG_KEY_SEARCH"
priority = "interactive"
models = ["chat"]
[[tenants]]
name = "batch-jobs"
key_env = "TG_KEY_BATCH"
requests_per_minute = 60
max_in_flight = 4
priority = "batch"
[[models]]
name = "chat"
[[models.deployments]]
provider = "openai"
base_url = "http://openai.test"
key_env = "OPENAI_KEY"
model = "gpt-4o-mini"
[[models]]
name = "backfill"
[[models.deployments]]
provider = "openai"
base_url = "http://openai.test"
key_env = "OPENAI_KEY"
model = "gpt-4o-mini"
"#;

const TENANT_ENV: [(&str, &str); 3] = [
    ("TG_KEY_SEARCH", "tg-search"),
    ("TG_KEY_BATCH", "tg-batch"),
    ("OPENAI_KEY", "sk-openai"),
];

/// `count` calls of `tenant`'s key to `model`, one after another: each one's status and time.
async fn sequential(
    gateway: &Arc<Gateway>,
    key: &str,
    model: &str,
    count: usize,
) -> Vec<(StatusCode, Duration)> {
    let mut out = Vec::new();
    for _ in 0..count {
        let started = tokio::time::Instant::now();
        let auth = format!("Bearer {key}");
        let answer = authed(
            gateway,
            "/v1/chat/completions",
            &chat(model),
            &[("authorization", &auth)],
        )
        .await;
        out.push((answer.status, started.elapsed()));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_flooding_tenant_is_held_to_its_limits_and_the_other_keeps_its_pace() {
    let provider = || {
        sim(
            "[latency]\ntime_to_first_token = \"200ms\"\n[[keys]]\nkey = \"sk-openai\"\nname = \"k\"\n",
        )
    };
    // Alone: the search team's pace with nobody else on the gateway.
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", provider())]));
    let alone = gateway(TENANTS, &TENANT_ENV, &hosts).await;
    let by_itself = sequential(&alone, "tg-search", "chat", 50).await;
    assert!(by_itself.iter().all(|(s, _)| *s == StatusCode::OK));
    let pace_alone: Duration = by_itself.iter().map(|(_, t)| *t).sum();

    // With the batch tenant flooding: 400 calls at once.
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", provider())]));
    let shared = gateway(TENANTS, &TENANT_ENV, &hosts).await;
    let mut flood = JoinSet::new();
    for _ in 0..400 {
        let gateway = shared.clone();
        flood.spawn(async move {
            let answer = authed(
                &gateway,
                "/v1/chat/completions",
                &chat("backfill"),
                &[("authorization", "Bearer tg-batch")],
            )
            .await;
            let retry = answer.headers.get("x-should-retry").cloned();
            assert!(
                answer.status != StatusCode::TOO_MANY_REQUESTS
                    || retry.is_some_and(|r| r == "false"),
                "a tenant's own limits are not for its SDK to retry: {:?}",
                answer.headers
            );
            (answer.status, answer.headers.get("retry-after").cloned())
        });
    }
    let with_flood = sequential(&shared, "tg-search", "chat", 50).await;
    let mut flooded = Vec::new();
    while let Some(result) = flood.join_next().await {
        flooded.push(result.unwrap());
    }
    assert!(
        with_flood.iter().all(|(s, _)| *s == StatusCode::OK),
        "{with_flood:?}"
    );
    let pace_shared: Duration = with_flood.iter().map(|(_, t)| *t).sum();
    let ratio = pace_shared.as_secs_f64() / pace_alone.as_secs_f64();
    println!(
        "the search team's 50 calls: {pace_alone:?} alone, {pace_shared:?} beside the flood \
         ({ratio:.3}×)"
    );
    assert!(ratio < 1.1, "within 10 % of its pace alone: {ratio}");
    // The flood: at most its four in flight and 60 a minute; the rest refused at once.
    let served = flooded.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let limited = flooded
        .iter()
        .filter(|(s, r)| *s == StatusCode::TOO_MANY_REQUESTS && r.is_some())
        .count();
    assert!(served <= 60, "{served} served past its 60 a minute");
    assert_eq!(
        served + limited,
        400,
        "every other call a 429 with retry-after"
    );

    // A model the tenant may not call: OpenAI's 403.
    let forbidden = authed(
        &shared,
        "/v1/chat/completions",
        &chat("backfill"),
        &[("authorization", "Bearer tg-search")],
    )
    .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden.body["error"]["type"], "permission_error");
    // What /admin/health shows of them.
    let tenants = crate::proxy::tenant::tenants_json(&shared.routes());
    assert_eq!(tenants[0]["name"], "search-team");
    assert_eq!(tenants[0]["refused_models"], 1);
    assert_eq!(tenants[1]["name"], "batch-jobs");
    assert_eq!(tenants[1]["max_in_flight"], 4);
    assert_eq!(tenants[1]["requests"], 400);
    assert_eq!(tenants[1]["refused_by_its_limits"], limited, "{tenants}");
    let mut text = String::new();
    crate::proxy::tenant::write_tenant_metrics(&mut text, &shared.routes());
    assert!(
        text.contains("tollgate_tenant_requests_total{tenant=\"batch-jobs\"} 400"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_tenants_token_estimate_is_replaced_by_the_usage_when_the_answer_ends() {
    let openai = sim(
        "[output]\nmin_tokens = 4\nmax_tokens = 4\n[[keys]]\nkey = \"sk-openai\"\nname = \"k\"\n",
    );
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    let config = TENANTS.replace(
        "requests_per_minute = 60\nmax_in_flight = 4",
        "tokens_per_minute = 200",
    );
    let gateway = gateway(&config, &TENANT_ENV, &hosts).await;
    // Each call may write 150 tokens: two such estimates are over 200 a minute, but each
    // answer has 4, so the estimate is given back when it ends.
    let body = json!({"model": "backfill", "max_tokens": 150, "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]});
    for call in 0..5 {
        let answer = authed(
            &gateway,
            "/v1/chat/completions",
            &body,
            &[("authorization", "Bearer tg-batch")],
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "call {call}: {}",
            answer.body
        );
    }
    // A call whose estimate alone is over the minute's tokens never fits.
    let huge = json!({"model": "backfill", "max_tokens": 500,
        "messages": [{"role": "user", "content": "Hi"}]});
    let refused = authed(
        &gateway,
        "/v1/chat/completions",
        &huge,
        &[("authorization", "Bearer tg-batch")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("200 tokens a minute"),
        "{}",
        refused.body
    );
    assert_eq!(
        openai.log().len(),
        5,
        "the refused call never reached the provider"
    );
}

#[tokio::test(start_paused = true)]
async fn a_tenants_budget_holds_and_its_spend_is_the_providers_usage_at_the_groups_price() {
    let openai = sim(
        "[output]\nmin_tokens = 100\nmax_tokens = 100\n[[keys]]\nkey = \"sk-openai\"\nname = \"k\"\n",
    );
    let hosts: Hosts = Arc::new(HashMap::from([("openai.test", openai.clone())]));
    let config = TENANTS.replace(
        "priority = \"interactive\"\nmodels = [\"chat\"]",
        "priority = \"interactive\"\nmodels = [\"chat\"]\nbudget_usd_per_day = 0.001",
    );
    let gateway = gateway(&config, &TENANT_ENV, &hosts).await;
    let body = json!({"model": "chat", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Tell me something."}]});
    let mut answered = 0;
    let refused = loop {
        let answer = authed(
            &gateway,
            "/v1/chat/completions",
            &body,
            &[("authorization", "Bearer tg-search")],
        )
        .await;
        if answer.status != StatusCode::OK {
            break answer;
        }
        let cost = answer.headers["x-tollgate-cost-usd"].to_str().unwrap();
        assert!(cost.starts_with("$0.0000"), "a call's cost: {cost}");
        answered += 1;
        assert!(answered < 1000, "the budget never refused");
    };
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["error"]["type"], "insufficient_quota");
    assert_eq!(refused.headers["x-should-retry"], "false");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant-search-team-day"),
        "{}",
        refused.body
    );
    // The spend is what the provider counted, at gpt-4o-mini's price (the group's), exactly.
    let routes = gateway.routes();
    let books = routes.books.as_ref().expect("books");
    let price = books
        .layer
        .prices()
        .price_of(tollgate_core::Provider::OpenAi, "chat")
        .unwrap();
    let expected = openai
        .log()
        .iter()
        .fold(tollgate::budget::Usd::ZERO, |sum, e| {
            let mut usage = tollgate_core::Usage::new(e.input_tokens, e.output_tokens);
            usage.cache_read_input_tokens = e.cached_input_tokens;
            sum + price.cost(&usage)
        });
    let snapshot = &books.layer.snapshot()[0];
    assert_eq!(snapshot.name, "tenant-search-team-day");
    assert_eq!(snapshot.spent.usd, expected, "to the picodollar");
    assert!(snapshot.spent.usd.as_dollars_f64() <= 0.001);
    assert_eq!(
        openai.log().len(),
        answered,
        "the refused call never reached the provider"
    );
    println!(
        "{answered} calls answered for {} of a $0.001 daily budget, then refused",
        snapshot.spent.usd
    );
    // The other tenant has no budget: it still calls.
    let other = authed(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "backfill", "max_tokens": 10,
            "messages": [{"role": "user", "content": "Hi"}]}),
        &[("authorization", "Bearer tg-batch")],
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_the_days_spend_from_the_spend_file() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tollgate.toml");
    let text = TENANTS.replace(
        "priority = \"interactive\"\nmodels = [\"chat\"]",
        "priority = \"interactive\"\nmodels = [\"chat\"]\nbudget_usd_per_day = 5.0",
    );
    let vars: HashMap<String, String> = TENANT_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env = move |name: &str| vars.get(name).cloned();
    let config = config::parse(&text, &env).unwrap();
    let spent =
        |gateway: &Arc<Gateway>| gateway.routes().books.as_ref().unwrap().layer.snapshot()[0].spent;
    let before = {
        let hosts: Hosts = Arc::new(HashMap::from([(
            "openai.test",
            sim("[[keys]]\nkey = \"sk-openai\"\nname = \"k\"\n"),
        )]));
        let spend = SpendFile::default()
            .for_config(&config, &config_path)
            .unwrap();
        let gateway = gateway_keeping(&text, &TENANT_ENV, &hosts, &spend).await;
        for _ in 0..5 {
            let answer = authed(
                &gateway,
                "/v1/chat/completions",
                &chat("chat"),
                &[("authorization", "Bearer tg-search")],
            )
            .await;
            assert_eq!(answer.status, StatusCode::OK);
        }
        spent(&gateway)
    };
    assert!(
        dir.path().join("tollgate-spend.redb").exists(),
        "beside the config"
    );
    assert!(before.usd > tollgate::budget::Usd::ZERO);
    // Everything dropped, the file closed: a new gateway reads the day's spend back.
    let hosts: Hosts = Arc::new(HashMap::from([(
        "openai.test",
        sim("[[keys]]\nkey = \"sk-openai\"\nname = \"k\"\n"),
    )]));
    let spend = SpendFile::default()
        .for_config(&config, &config_path)
        .unwrap();
    let gateway = gateway_keeping(&text, &TENANT_ENV, &hosts, &spend).await;
    assert_eq!(spent(&gateway), before, "to the picodollar");
}
