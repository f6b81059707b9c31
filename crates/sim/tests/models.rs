//! The Models API: `GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape (or
//! Anthropic's, with an `anthropic-version` header), authenticated like every call, charged to
//! no rate limit.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Reply, call, chat, get, request};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tollgate_sim::config::DEFAULT_MODELS;
use tollgate_sim::{Rejection, SimConfig, SimService};

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

/// A GET as Anthropic's SDK sends it: `x-api-key` and `anthropic-version`.
fn anthropic_get(path: &str, key: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://sim{path}"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .body(Full::default())
        .unwrap()
}

async fn models(sim: &SimService, path: &str, key: &str) -> Reply {
    call(sim, get("http://sim", path, key)).await
}

#[tokio::test(start_paused = true)]
async fn the_list_is_openais_with_the_default_models() {
    let sim = sim("");
    let reply = models(&sim, "/v1/models", "sk-any").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert!(reply.header("x-request-id").starts_with("req_"));
    let body = reply.json();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, DEFAULT_MODELS);
    assert_eq!(
        body["data"][0],
        json!({"id": "gpt-4o-mini", "object": "model", "created": 1_721_260_800_u64,
            "owned_by": "tollgate-sim"})
    );
}

#[tokio::test(start_paused = true)]
async fn one_model_is_found_by_id_and_an_unknown_one_is_model_not_found() {
    let sim = sim("models = [\"gpt-4o\", \"ft:gpt-4o-mini:org:custom:abc\"]\n");
    let reply = models(&sim, "/v1/models/gpt-4o", "sk").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], "gpt-4o");
    let reply = models(
        &sim,
        "/v1/models/ft%3Agpt-4o-mini%3Aorg%3Acustom%3Aabc",
        "sk",
    )
    .await;
    assert_eq!(reply.json()["id"], "ft:gpt-4o-mini:org:custom:abc");

    let reply = models(&sim, "/v1/models/gpt-4o-mini", "sk").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json(),
        json!({"error": {"message": "The model 'gpt-4o-mini' does not exist",
            "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
    );
    assert_eq!(sim.stats().rejected(Rejection::NotFound), 1);
}

#[tokio::test(start_paused = true)]
async fn unknown_and_revoked_keys_are_refused_in_the_providers_shape() {
    let sim = sim(r#"
        [[keys]]
        key = "sk-good"
        [[keys]]
        key = "sk-revoked"
        revoked_after = "10s"
    "#);
    assert_eq!(models(&sim, "/v1/models", "sk-good").await.status, 200);
    let reply = models(&sim, "/v1/models", "sk-unknown").await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["code"], "invalid_api_key");

    tokio::time::advance(Duration::from_secs(10)).await;
    let reply = models(&sim, "/v1/models/gpt-4o", "sk-revoked").await;
    assert_eq!(reply.status, 401);
    let reply = call(&sim, anthropic_get("/v1/models", "sk-revoked")).await;
    assert_eq!(reply.status, 401);
    let body = reply.json();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("authentication_error"))
    );
    let missing = Request::get("http://sim/v1/models")
        .body(Full::default())
        .unwrap();
    assert_eq!(call(&sim, missing).await.status, 401);
    assert_eq!(sim.stats().rejected(Rejection::Unauthorized), 4);
}

#[tokio::test(start_paused = true)]
async fn listing_models_spends_no_rate_limit_and_meets_no_fault() {
    let sim = sim(r#"
        [[keys]]
        key = "sk"
        requests_per_minute = 1
        [faults]
        error_rate = 1.0
    "#);
    for _ in 0..5 {
        assert_eq!(models(&sim, "/v1/models", "sk").await.status, 200);
    }
    let reply = call(
        &sim,
        request(
            "http://sim",
            "/v1/chat/completions",
            "sk",
            &chat("m", "x", 1),
        ),
    )
    .await;
    assert_eq!(
        reply.status, 500,
        "the chat call meets the fault, not a 429"
    );

    let sim = self::sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 1\n");
    for _ in 0..3 {
        assert_eq!(models(&sim, "/v1/models", "sk").await.status, 200);
    }
    let chat = chat("m", "x", 1);
    let reply = call(
        &sim,
        request("http://sim", "/v1/chat/completions", "sk", &chat),
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "the one request of the minute is still there"
    );
    let stats = sim.stats();
    assert_eq!((stats.received, stats.accepted), (4, 4));
}

#[tokio::test(start_paused = true)]
async fn anthropic_clients_get_anthropics_shape_a_page_at_a_time() {
    let sim = sim("models = [\"claude-a\", \"claude-b\", \"claude-c\"]\n");
    let reply = call(&sim, anthropic_get("/v1/models", "sk-ant")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("request-id").starts_with("req_"));
    assert_eq!(
        reply.json(),
        json!({
            "data": [
                {"type": "model", "id": "claude-a", "display_name": "claude-a",
                    "created_at": "2024-07-18T00:00:00Z"},
                {"type": "model", "id": "claude-b", "display_name": "claude-b",
                    "created_at": "2024-07-18T00:00:00Z"},
                {"type": "model", "id": "claude-c", "display_name": "claude-c",
                    "created_at": "2024-07-18T00:00:00Z"},
            ],
            "has_more": false,
            "first_id": "claude-a",
            "last_id": "claude-c",
        })
    );
    let page = call(
        &sim,
        anthropic_get("/v1/models?limit=1&after_id=claude-a", "k"),
    )
    .await;
    let page = page.json();
    assert_eq!(
        (&page["first_id"], &page["last_id"], &page["has_more"]),
        (&json!("claude-b"), &json!("claude-b"), &json!(true))
    );
    let one = call(&sim, anthropic_get("/v1/models/claude-c", "k")).await;
    assert_eq!(one.json()["type"], "model");
    let unknown = call(&sim, anthropic_get("/v1/models/claude-z", "k")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");
    let bad = call(&sim, anthropic_get("/v1/models?limit=0", "k")).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(start_paused = true)]
async fn mistral_flavor_answers_errors_in_mistrals_shape() {
    let sim = sim("openai_flavor = \"mistral\"\n");
    let reply = models(&sim, "/v1/models/nope", "sk").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json(),
        json!({"object": "error", "message": "Invalid model: nope", "type": "invalid_model",
            "param": null, "code": "1500"})
    );
}

#[test]
fn the_model_list_is_validated() {
    for (toml, field) in [
        ("models = [\"\"]", "models[0]"),
        ("models = [\"a\", \"b/c\"]", "models[1]"),
        ("models = [\"a\", \"a\"]", "models[1]"),
    ] {
        let error = SimConfig::from_toml(toml).unwrap_err().to_string();
        assert!(error.contains(field), "{toml}: {error}");
    }
    let empty = SimConfig::from_toml("models = []").unwrap();
    assert!(empty.models.is_empty());
}
