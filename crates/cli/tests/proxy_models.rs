//! `tollgate proxy` with `[[models]]` groups, as a process over real sockets: `SIGHUP` reloads
//! the config while streams are open, and every one of them completes; a config that does not
//! load is refused and the running one kept. (The groups' routing, fallbacks and limits under
//! minutes of simulated traffic are tested in-process: src/proxy/routes/tests.rs.)

mod support;

use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tollgate_sim::{Sim, SimConfig};

use support::{CLIENT_KEY, Proxy, bearer, call, get, post, send};

const KEY: &str = "sk-groups-7c1d";

fn groups(sim: &str, extra: &str) -> String {
    format!(
        r#"[server]
api_keys = ["{CLIENT_KEY}"]
[stack]
preset = "balanced"
max_concurrent_requests = 256
[stack.overload]
initial_limit = 128
[[models]]
name = "chat"
[[models.deployments]]
name = "openai"
provider = "openai"
base_url = "{sim}"
key_env = "TG_GROUPS_KEY"
model = "gpt-4o-mini"
{extra}"#
    )
}

fn hangup(proxy: &Proxy) {
    let status = Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (up to 10 s) for `text` in the gateway's log.
async fn logged(proxy: &Proxy, text: &str) {
    for _ in 0..200 {
        if proxy.log().contains(text) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {text:?} in the log:\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_while_a_hundred_streams_complete() {
    let sim = Sim::start(
        SimConfig::from_toml(&format!(
            "[latency]\ntime_to_first_token = \"50ms\"\nper_output_token = \"20ms\"\n\
             [output]\nmin_tokens = 60\nmax_tokens = 60\n[[keys]]\nkey = \"{KEY}\"\nname = \"k\"\n"
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let proxy = Proxy::start_with_env(&groups(&sim.url(), ""), &[("TG_GROUPS_KEY", KEY)]);

    // A hundred streams of 60 tokens, 20 ms apart: each open for over a second.
    let client = Client::builder(TokioExecutor::new()).build_http();
    let auth = format!("Bearer {CLIENT_KEY}");
    let mut streams = Vec::new();
    for _ in 0..100 {
        let request = post(
            &format!("{}/v1/chat/completions", proxy.url),
            Some(("authorization", &auth)),
            &json!({"model": "chat", "stream": true, "max_tokens": 60,
                "messages": [{"role": "user", "content": "Tell me a story."}]}),
        );
        let response = client.request(request);
        streams.push(tokio::spawn(async move {
            let response = response.await.unwrap();
            let status = response.status();
            let deployment = response
                .headers()
                .get("x-tollgate-deployment")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                deployment,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }));
    }
    // Every stream under way: the simulator has them all.
    for _ in 0..200 {
        if sim.stats().received >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sim.stats().received,
        100,
        "a hundred streams open: {}",
        proxy.log()
    );

    // A new group, and SIGHUP while they stream.
    let changed = groups(
        &sim.url(),
        &format!(
            "[[models]]\nname = \"fast\"\n[[models.deployments]]\nprovider = \"openai\"\n\
             base_url = \"{}\"\nkey_env = \"TG_GROUPS_KEY\"\nmodel = \"gpt-4o\"\n",
            sim.url()
        ),
    );
    std::fs::write(&proxy.config, changed).unwrap();
    hangup(&proxy);
    logged(&proxy, "config reloaded").await;
    let fast = call(
        &proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &json!({"model": "fast", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(fast.status, StatusCode::OK, "{:?}", fast.body);
    assert_eq!(fast.header("x-tollgate-deployment"), "fast/openai-0");

    for stream in streams {
        let (status, deployment, body) = stream.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(deployment.as_deref(), Some("chat/openai"));
        assert!(
            body.trim_end().ends_with("data: [DONE]"),
            "completed: {body}"
        );
    }

    // A config that does not load: refused, logged, and the running one kept.
    std::fs::write(
        &proxy.config,
        groups(&sim.url(), "[[models]]\nname = \"chat\"\n"),
    )
    .unwrap();
    hangup(&proxy);
    logged(&proxy, "the config was not reloaded").await;
    assert!(
        proxy.log().contains("models[1]"),
        "the error names the field: {}",
        proxy.log()
    );
    let mut request = get(&format!("{}/v1/models", proxy.url));
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {CLIENT_KEY}").parse().unwrap(),
    );
    let models = send(request).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "fast"], "the running config is kept");
    proxy.assert_no_secret_logged();
    assert!(!proxy.log().contains(KEY));
}

async fn provider(keys: &[(&str, &str, &str)]) -> tollgate_sim::SimHandle {
    let mut text = String::from("[latency]\ntime_to_first_token = \"5ms\"\n");
    for (key, name, extra) in keys {
        text.push_str(&format!(
            "[[keys]]\nkey = \"{key}\"\nname = \"{name}\"\n{extra}\n"
        ));
    }
    Sim::start(SimConfig::from_toml(&text).unwrap())
        .await
        .unwrap()
}

fn admin(
    proxy: &Proxy,
    method: http::Method,
    path: &str,
    body: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", proxy.url))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap()
}

const ADMIN: &str = "adm-groups-0d9e44";

/// Three processes' worth of providers on loopback — an OpenAI account with three keys, an
/// Azure deployment, an Anthropic account — behind one gateway process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_routes_three_providers_fails_over_a_revoked_key_and_falls_back() {
    let openai = provider(&[
        ("sk-oa-1", "a", ""),
        ("sk-oa-2", "b", ""),
        ("sk-oa-3", "c", "revoked_after = \"0s\""),
    ])
    .await;
    let azure = provider(&[("az-1", "azure", "")]).await;
    let anthropic = provider(&[("sk-ant-1", "anthropic", "")]).await;
    let config = format!(
        r#"[server]
api_keys = ["{CLIENT_KEY}"]
admin_token_env = "TG_ADMIN"
[stack]
preset = "balanced"
[[models]]
name = "chat"
fallbacks = ["backup"]
# The revoked key first: the first call meets it.
policy = "ordered"
[[models.deployments]]
name = "openai"
provider = "openai"
base_url = "{openai}"
keys_env = "TG_OPENAI_KEYS"
model = "gpt-4o-mini"
[[models]]
name = "backup"
[[models.deployments]]
name = "azure"
provider = "azure"
base_url = "{azure}"
key_env = "TG_AZURE_KEY"
deployment = "gpt-4o-mini-prod"
api_version = "2024-10-21"
[[models]]
name = "claude"
[[models.deployments]]
provider = "anthropic"
base_url = "{anthropic}"
key_env = "TG_ANTHROPIC_KEY"
model = "claude-3-5-haiku-latest"
"#,
        openai = openai.url(),
        azure = azure.url(),
        anthropic = anthropic.url(),
    );
    let proxy = Proxy::start_with_env(
        &config,
        &[
            ("TG_OPENAI_KEYS", "sk-oa-3,sk-oa-1,sk-oa-2"),
            ("TG_AZURE_KEY", "az-1"),
            ("TG_ANTHROPIC_KEY", "sk-ant-1"),
            ("TG_ADMIN", ADMIN),
        ],
    );
    let chat = |model: &str| {
        json!({"model": model, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}]})
    };

    // The first key's account revoked it: each call fails over to the next key within
    // itself, and the revoked key is out of rotation after its one 401.
    for _ in 0..10 {
        let answer = call(
            &proxy,
            "/v1/chat/completions",
            bearer(CLIENT_KEY),
            &chat("chat"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.header("x-tollgate-deployment"), "chat/openai-2");
    }
    let log = openai.log();
    assert_eq!(
        log.iter().filter(|e| e.status == 401).count(),
        1,
        "one 401, then the revoked key is out of rotation: {:?}",
        log.iter()
            .map(|e| (e.at, e.key.clone(), e.status))
            .collect::<Vec<_>>()
    );
    let health = send(admin(&proxy, http::Method::GET, "/admin/health", ""))
        .await
        .json();
    let members = health["models"][0]["members"].as_array().unwrap().clone();
    let revoked = &members[0];
    assert_eq!(revoked["name"], "chat/openai-1");
    assert_eq!(revoked["state"], "cooling_down", "{revoked}");
    assert_eq!(revoked["reason"], "auth_error");
    assert!(revoked["cooldown_left_ms"].as_u64().unwrap() > 3_500_000);
    assert!(revoked["credential"].is_string(), "an id, never the key");
    let public = send(get(&format!("{}/health", proxy.url))).await.json();
    assert_eq!(public["models"][0]["members"][0]["state"], "cooling_down");

    // An operator puts it back.
    let reset = send(admin(
        &proxy,
        http::Method::POST,
        "/admin/pool/reset",
        r#"{"member": "chat/openai-1"}"#,
    ))
    .await;
    assert_eq!(reset.status, StatusCode::OK);
    assert_eq!(reset.json()["reset"], json!(["chat/openai-1"]));
    let health = send(admin(&proxy, http::Method::GET, "/admin/health", ""))
        .await
        .json();
    assert_eq!(health["models"][0]["members"][0]["state"], "available");

    // Anthropic's API reaches its group.
    let messages = call(
        &proxy,
        "/v1/messages",
        Some(("x-api-key", CLIENT_KEY.to_owned())),
        &chat("claude"),
    )
    .await;
    assert_eq!(messages.status, StatusCode::OK, "{:?}", messages.body);
    assert_eq!(messages.json()["model"], "claude-3-5-haiku-latest");

    // The OpenAI account gone: "chat" falls back to its Azure deployment, and says so.
    openai.shutdown().await;
    let moved = call(
        &proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &chat("chat"),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.header("x-tollgate-deployment"), "backup/azure");
    // No connection: the members' breakers may have opened on the way.
    let why = moved.header("x-tollgate-degraded");
    assert!(["connect_error", "circuit_open"].contains(&why), "{why}");
    assert_eq!(azure.log().len(), 1);
    assert!(azure.log()[0].route.contains("gpt-4o-mini-prod"));
    proxy.assert_no_secret_logged();
    for key in ["sk-oa-1", "sk-oa-2", "sk-oa-3", "az-1", "sk-ant-1", ADMIN] {
        assert!(!proxy.log().contains(key), "{key} logged");
    }
}
