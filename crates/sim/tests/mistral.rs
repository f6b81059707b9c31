//! The Mistral mode (`openai_flavor = "mistral"`): OpenAI's bodies with Mistral's
//! `x-ratelimitbysize-*-minute` headers and `{"object":"error",...}` errors, and how
//! tollgate-core reads them.

mod common;

use std::time::{Duration, SystemTime};

use common::{Reply, call, chat, client, request, send};
use serde_json::{Value, json};
use tollgate_core::classify::classify_response;
use tollgate_core::{OutcomeKind, Provider, RateLimitDimension, RateLimitSnapshot};
use tollgate_sim::{Sim, SimConfig, SimService};

fn config(toml: &str) -> SimConfig {
    SimConfig::from_toml(&format!("openai_flavor = \"mistral\"\n{toml}")).expect("a valid scenario")
}

fn sim(toml: &str) -> SimService {
    SimService::new(config(toml)).expect("a valid config")
}

fn classify(reply: &Reply) -> tollgate_core::Outcome {
    classify_response(reply.status, &reply.headers, &reply.body, SystemTime::now())
}

fn error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"object": "error", "message": message, "type": kind, "param": null, "code": code})
}

async fn send_chat(sim: &SimService, key: &str, max_tokens: u64) -> Reply {
    call(
        sim,
        request(
            "http://sim",
            "/v1/chat/completions",
            key,
            &chat("mistral-small-latest", "x", max_tokens),
        ),
    )
    .await
}

#[tokio::test]
async fn openai_bodies_with_mistral_headers() {
    let sim = Sim::start(config(
        r#"
        [[keys]]
        key = "mistral-key"
        requests_per_minute = 60
        tokens_per_minute = 500000
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
        request(
            &sim.url(),
            "/v1/chat/completions",
            "mistral-key",
            &chat("mistral-small-latest", "x", 100),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ratelimitbysize-limit-minute"), "500000");
    // 7 prompt tokens + 100 max_tokens charged at admission.
    assert_eq!(reply.header("x-ratelimitbysize-remaining-minute"), "499893");
    assert!(
        reply
            .headers
            .keys()
            .all(|n| !n.as_str().starts_with("x-ratelimit-")),
        "no OpenAI headers: {:?}",
        reply.headers
    );
    let body = reply.json();
    assert_eq!(
        (body["object"].as_str(), body["model"].as_str()),
        (Some("chat.completion"), Some("mistral-small-latest"))
    );
    let snapshot =
        RateLimitSnapshot::from_headers(&reply.headers, Some(Provider::Mistral), SystemTime::now());
    let tokens = snapshot.tokens.unwrap();
    assert_eq!(
        (tokens.limit, tokens.remaining, tokens.period),
        (Some(500_000), Some(499_893), Some(Duration::from_secs(60)))
    );

    let body = json!({"model": "mistral-embed", "input": ["alpha"]});
    let reply = send(
        &client,
        request(&sim.url(), "/v1/embeddings", "mistral-key", &body),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains_key("x-ratelimitbysize-remaining-minute")
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn requests_and_tokens_rate_limits() {
    let sim = sim(r#"
        [[keys]]
        key = "rpm"
        requests_per_minute = 2
        [[keys]]
        key = "tpm"
        tokens_per_minute = 600
    "#);
    for _ in 0..2 {
        assert_eq!(send_chat(&sim, "rpm", 5).await.status, 200);
    }
    let reply = send_chat(&sim, "rpm", 5).await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.json(),
        error("Requests rate limit exceeded", "rate_limited", Some("1300"))
    );
    assert_eq!(reply.header("retry-after"), "30");
    let outcome = classify(&reply);
    assert_eq!(
        outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::Requests)
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(send_chat(&sim, "rpm", 5).await.status, 200);

    // An unread answer holds 7 + 393 of 600 tokens; the next 400 wait for 200 more, 20 s at
    // 10 a second.
    let held = tower::ServiceExt::oneshot(
        sim.clone(),
        request(
            "http://sim",
            "/v1/chat/completions",
            "tpm",
            &chat("m", "x", 393),
        ),
    )
    .await
    .unwrap();
    let reply = send_chat(&sim, "tpm", 393).await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.json(),
        error("Tokens rate limit exceeded", "rate_limited", Some("1300"))
    );
    assert_eq!(reply.header("retry-after"), "20");
    assert_eq!(reply.header("x-ratelimitbysize-remaining-minute"), "200");
    let outcome = classify(&reply);
    assert!(
        matches!(outcome.kind, OutcomeKind::RateLimited(_)),
        "{outcome:?}"
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(20)));
    tokio::time::sleep(Duration::from_millis(19_999)).await;
    assert_eq!(send_chat(&sim, "tpm", 393).await.status, 429);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(send_chat(&sim, "tpm", 393).await.status, 200);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn every_other_refusal_in_mistral_shape() {
    let sim = sim(r#"
        [[keys]]
        key = "small"
        tokens_per_minute = 100
        [[keys]]
        key = "spent"
        quota_exhausted = true
    "#);
    let reply = send_chat(&sim, "wrong", 5).await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()),
        (401, error("Unauthorized", "invalid_request_error", None))
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::AuthError);

    let reply = send_chat(&sim, "spent", 5).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["type"], "insufficient_quota");
    assert_eq!(classify(&reply).kind, OutcomeKind::QuotaExhausted);

    let reply = send_chat(&sim, "small", 500).await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.json(),
        error(
            "Request too large: 507 tokens requested, the limit is 100 per minute.",
            "rate_limited",
            Some("1300")
        )
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::RequestTooLarge);

    let reply = call(
        &sim,
        request(
            "http://sim",
            "/v1/chat/completions",
            "small",
            &json!({"model": "m"}),
        ),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        (
            reply.json()["object"].as_str(),
            reply.json()["type"].as_str()
        ),
        (Some("error"), Some("invalid_request_error"))
    );
    let reply = call(
        &sim,
        request("http://sim", "/v1/nothing", "small", &json!({})),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["object"], "error");

    let sim = self::sim("[faults]\nerror_rate = 1.0\n");
    let reply = send_chat(&sim, "any", 5).await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()),
        (
            500,
            error("Internal server error", "internal_server_error", None)
        )
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::ServerError);

    let sim = self::sim(
        "[latency]\ntime_to_first_token = \"1s\"\n[faults]\ncapacity = 1\noverload_status = 503\n",
    );
    let slow = tokio::spawn({
        let sim = sim.clone();
        async move { send_chat(&sim, "any", 5).await.status }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = send_chat(&sim, "any", 5).await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()),
        (503, error("Overloaded", "service_unavailable", None))
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::Overloaded);
    assert_eq!(slow.await.unwrap(), 200);
}
