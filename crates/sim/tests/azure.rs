//! The Azure OpenAI mode: `/openai/deployments/{deployment}/...?api-version=`, the deployment
//! as the model, only `x-ratelimit-remaining-*` headers, Azure's 401/404/429 bodies with three
//! wait headers, 10 s windows, and how tollgate-core reads them.

mod common;

use std::time::{Duration, SystemTime};

use common::{Reply, call, client, post, send};
use serde_json::{Value, json};
use tollgate_core::classify::classify_response;
use tollgate_core::{OutcomeKind, Provider, RateLimitDimension, RateLimitSnapshot};
use tollgate_sim::{Rejection, Sim, SimConfig, SimService};

const CHAT: &str = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";

fn config(toml: &str) -> SimConfig {
    SimConfig::from_toml(toml).expect("a valid scenario")
}

fn sim(toml: &str) -> SimService {
    SimService::new(config(toml)).expect("a valid config")
}

fn classify(reply: &Reply) -> tollgate_core::Outcome {
    classify_response(reply.status, &reply.headers, &reply.body, SystemTime::now())
}

fn chat(max_tokens: u64) -> Value {
    json!({"max_tokens": max_tokens, "messages": [{"role": "user", "content": "x"}]})
}

async fn send_chat(sim: &SimService, key: &str, max_tokens: u64) -> Reply {
    call(
        sim,
        post("http://sim", CHAT, &[("api-key", key)], &chat(max_tokens)),
    )
    .await
}

fn rate_limit_message(kind: &str, seconds: u64) -> String {
    format!(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded {kind} rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )
}

#[tokio::test]
async fn deployments_answer_with_openai_bodies_and_two_headers() {
    let sim = Sim::start(config(
        r#"
        [[keys]]
        key = "azure-key"
        requests_per_minute = 60
        tokens_per_minute = 10000
        [output]
        min_tokens = 4
        max_tokens = 4
    "#,
    ))
    .await
    .unwrap();
    let client = client();
    let reply = send(
        &client,
        post(&sim.url(), CHAT, &[("api-key", "azure-key")], &chat(100)),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "59");
    // 7 prompt tokens + 100 max_tokens charged at admission.
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), "9893");
    let names: Vec<&str> = reply.headers.keys().map(|n| n.as_str()).collect();
    assert!(
        names
            .iter()
            .filter(|n| n.contains("ratelimit"))
            .all(|n| n.starts_with("x-ratelimit-remaining-")),
        "no limit or reset headers: {names:?}"
    );
    assert!(!reply.header("apim-request-id").is_empty());
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt4o-prod", "the deployment is the model");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    let snapshot = RateLimitSnapshot::from_headers(
        &reply.headers,
        Some(Provider::AzureOpenAi),
        SystemTime::now(),
    );
    let (requests, tokens) = (snapshot.requests.unwrap(), snapshot.tokens.unwrap());
    assert_eq!(
        (requests.remaining, requests.limit, tokens.remaining),
        (Some(59), None, Some(9_893))
    );

    let embeddings = "/openai/deployments/embed-small/embeddings?api-version=2024-10-21";
    let body = json!({"input": ["alpha", "beta"], "dimensions": 4});
    let reply = send(
        &client,
        post(&sim.url(), embeddings, &[("api-key", "azure-key")], &body),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["model"], "embed-small");
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 2);

    let mut streamed = chat(100);
    streamed["stream"] = json!(true);
    let reply = send(
        &client,
        post(&sim.url(), CHAT, &[("api-key", "azure-key")], &streamed),
    )
    .await;
    assert_eq!(reply.events().last().unwrap().1, "[DONE]");
    let log = sim.log();
    assert_eq!(log[0].model.as_deref(), Some("gpt4o-prod"));
    assert_eq!(log[1].model.as_deref(), Some("embed-small"));
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_api_versions_and_bad_keys() {
    let sim = Sim::start(config("[[keys]]\nkey = \"azure-key\"\n"))
        .await
        .unwrap();
    let client = client();
    let not_found = json!({"error": {"code": "404", "message": "Resource not found"}});
    for path in [
        "/openai/deployments/gpt4o-prod/chat/completions",
        "/openai/deployments/gpt4o-prod/completions?api-version=2024-10-21",
    ] {
        let reply = send(
            &client,
            post(&sim.url(), path, &[("api-key", "azure-key")], &chat(5)),
        )
        .await;
        assert_eq!(
            (reply.status.as_u16(), reply.json()),
            (404, not_found.clone())
        );
    }
    let reply = send(
        &client,
        post(&sim.url(), CHAT, &[("api-key", "wrong")], &chat(5)),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}})
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::AuthError);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.rejected(Rejection::NotFound),
            stats.rejected(Rejection::Unauthorized)
        ),
        (2, 1)
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ten_second_windows_and_three_wait_headers() {
    let sim = sim(r#"
        [[keys]]
        key = "azure-key"
        requests_per_minute = 60
        tokens_per_minute = 100000
        window = "10s"
    "#);
    for _ in 0..10 {
        assert_eq!(send_chat(&sim, "azure-key", 5).await.status, 200);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reply = send_chat(&sim, "azure-key", 5).await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.json(),
        json!({"error": {"code": "429", "message": rate_limit_message("call", 6)}})
    );
    assert_eq!(reply.header("retry-after"), "6");
    assert_eq!(reply.header("retry-after-ms"), "6000");
    assert_eq!(reply.header("x-ms-retry-after-ms"), "6000");
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "0");
    let outcome = classify(&reply);
    assert_eq!(
        outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::Requests)
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(6)));

    tokio::time::sleep(Duration::from_millis(5_999)).await;
    assert_eq!(send_chat(&sim, "azure-key", 5).await.status, 429);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let reply = send_chat(&sim, "azure-key", 5).await;
    assert_eq!(reply.status, 200, "a new window");
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "9");
}

#[tokio::test(start_paused = true)]
async fn token_windows_say_token_rate_limit() {
    // 6,000 TPM over 10 s windows: 1,000 tokens a window.
    let sim = sim(r#"
        [[keys]]
        key = "azure-key"
        tokens_per_minute = 6000
        window = "10s"
        [[keys]]
        key = "azure-spent"
        quota_exhausted = true
    "#);
    // An unread answer keeps its reservation of 7 + 600 tokens.
    let held = tower::ServiceExt::oneshot(
        sim.clone(),
        post("http://sim", CHAT, &[("api-key", "azure-key")], &chat(600)),
    )
    .await
    .unwrap();
    assert_eq!(held.status(), 200);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let reply = send_chat(&sim, "azure-key", 600).await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.json()["error"]["message"],
        rate_limit_message("token", 8)
    );
    assert_eq!(reply.header("retry-after"), "8", "7.5 s rounded up");
    assert_eq!(reply.header("retry-after-ms"), "7500");
    assert_eq!(reply.header("x-ms-retry-after-ms"), "7500");
    let outcome = classify(&reply);
    assert_eq!(
        outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::Tokens)
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_millis(7_500)));
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    assert_eq!(send_chat(&sim, "azure-key", 600).await.status, 200);
    drop(held);

    let reply = send_chat(&sim, "azure-spent", 5).await;
    assert_eq!(reply.status, 429);
    assert_eq!(classify(&reply).kind, OutcomeKind::QuotaExhausted);
}
