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
