//! The Batch APIs, in-process under paused time (and once over loopback): OpenAI's file upload
//! and batches, Anthropic's message batches, their errors, and their determinism.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Reply, call, chat, client, jsonl as lines, request, send, upload};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use tollgate_sim::{Rejection, Sim, SimConfig, SimService};

const KEY: &str = "sk-batch";
const DELAY: Duration = Duration::from_secs(60);
const BASE: &str = "http://sim";

fn config(seed: u64, delay: &str) -> SimConfig {
    SimConfig::from_toml(&format!(
        r#"
        seed = {seed}
        [batch]
        completion_delay = "{delay}"
        [output]
        min_tokens = 16
        max_tokens = 32
        [[keys]]
        key = "{KEY}"
        name = "batcher"
        requests_per_minute = 2
    "#
    ))
    .expect("a valid scenario")
}

fn sim(seed: u64) -> SimService {
    SimService::new(config(seed, "60s")).expect("a valid config")
}

fn get(path: &str, key: &str) -> Request<Full<Bytes>> {
    let builder = Request::get(format!("{BASE}{path}"));
    let builder = if path.starts_with("/v1/messages") {
        builder.header("x-api-key", key)
    } else {
        builder.header("authorization", format!("Bearer {key}"))
    };
    builder.body(Full::default()).unwrap()
}

fn line(custom_id: &str, body: &Value) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        .to_string()
}

/// Three good requests (capped at 1, 2 and 3 tokens) and a bad one (no messages), as JSONL.
fn input() -> String {
    let mut lines: Vec<String> = (1..=3)
        .map(|i| {
            line(
                &format!("req-{i}"),
                &chat("gpt-4o-mini", &"why ".repeat(i), i as u64),
            )
        })
        .collect();
    lines.insert(
        2,
        line("bad-1", &json!({"model": "gpt-4o-mini", "messages": []})),
    );
    lines.join("\n") + "\n"
}

fn create(file_id: &str) -> Value {
    json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
}

fn message_requests() -> Value {
    let params = |max_tokens: u64| chat("claude-sonnet-4-5", "Hello there", max_tokens);
    json!({"requests": [
        {"custom_id": "first", "params": params(5)},
        // No max_tokens: errored when it runs, not refused at creation.
        {"custom_id": "broken", "params": {"model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x"}]}},
        {"custom_id": "third", "params": params(7)},
    ]})
}

/// The whole OpenAI flow; returns the output and error files.
async fn openai_flow(sim: &SimService) -> (Reply, Reply) {
    let file = call(sim, upload(BASE, KEY, "batch", &input())).await;
    assert_eq!(file.status, 200, "{:?}", file.body);
    let file = file.json();
    let file_id = file["id"].as_str().unwrap();
    assert!(file_id.starts_with("file-"));
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["filename"], "input.jsonl");
    assert_eq!(file["bytes"], input().len());
    let content = call(sim, get(&format!("/v1/files/{file_id}/content"), KEY)).await;
    assert_eq!(content.body, input().as_bytes());

    let batch = call(sim, request(BASE, "/v1/batches", KEY, &create(file_id))).await;
    assert_eq!(batch.status, 200, "{:?}", batch.body);
    let batch = batch.json();
    let id = batch["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("batch_"));
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["input_file_id"], file_id);
    assert_eq!(batch["completion_window"], "24h");
    assert_eq!(batch["output_file_id"], Value::Null);
    assert_eq!(batch["in_progress_at"], Value::Null);
    assert_eq!(
        batch["expires_at"].as_u64().unwrap(),
        batch["created_at"].as_u64().unwrap() + 86_400
    );
    assert_eq!(
        batch["request_counts"],
        json!({"total": 4, "completed": 0, "failed": 0})
    );

    let path = format!("/v1/batches/{id}");
    tokio::time::advance(DELAY / 2).await;
    let polled = call(sim, get(&path, KEY)).await.json();
    assert_eq!(polled["status"], "in_progress");
    assert!(polled["in_progress_at"].is_u64());
    assert_eq!(polled["completed_at"], Value::Null);

    tokio::time::advance(DELAY / 2).await;
    let done = call(sim, get(&path, KEY)).await.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["request_counts"],
        json!({"total": 4, "completed": 3, "failed": 1})
    );
    assert_eq!(
        done["completed_at"].as_u64().unwrap(),
        done["created_at"].as_u64().unwrap() + 60
    );
    assert!(
        done["usage"]["output_tokens"] == 1 + 2 + 3,
        "{}",
        done["usage"]
    );
    let output_id = done["output_file_id"].as_str().unwrap();
    let error_id = done["error_file_id"].as_str().unwrap();
    let output = call(sim, get(&format!("/v1/files/{output_id}/content"), KEY)).await;
    let errors = call(sim, get(&format!("/v1/files/{error_id}/content"), KEY)).await;
    assert_eq!((output.status.as_u16(), errors.status.as_u16()), (200, 200));
    (output, errors)
}

#[tokio::test(start_paused = true)]
async fn openai_batch_from_upload_to_output_file() {
    let sim = sim(7);
    let (output, errors) = openai_flow(&sim).await;

    let output = lines(&output);
    let ids: Vec<&str> = output
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["req-1", "req-2", "req-3"]);
    for (i, record) in (1u64..).zip(&output) {
        assert!(record["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(record["error"], Value::Null);
        let response = &record["response"];
        assert_eq!(response["status_code"], 200);
        assert!(response["request_id"].as_str().unwrap().starts_with("req_"));
        let body = &response["body"];
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4o-mini");
        // Each line's own cap: the custom_id maps to its request.
        assert_eq!(body["usage"]["completion_tokens"], i);
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 3 + i);
    }

    let errors = lines(&errors);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["custom_id"], "bad-1");
    assert_eq!(errors[0]["response"]["status_code"], 400);
    let error = &errors[0]["response"]["body"]["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("messages"));

    // Batch calls are logged with their key, and charge no per-minute limit: both of this
    // key's two requests per minute are still there.
    let log = sim.log();
    assert!(
        log.iter()
            .all(|e| e.key.as_deref() == Some("batcher") && e.status == 200)
    );
    assert!(log.iter().any(|e| e.route == "POST /v1/files"));
    for expected in [200, 200, 429] {
        let reply = call(
            &sim,
            request(BASE, "/v1/chat/completions", KEY, &chat("m", "x", 5)),
        )
        .await;
        assert_eq!(reply.status, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn anthropic_message_batch_from_create_to_results() {
    let sim = sim(7);
    let created = call(
        &sim,
        request(BASE, "/v1/messages/batches", KEY, &message_requests()),
    )
    .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let batch = created.json();
    let id = batch["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msgbatch_"));
    assert_eq!(batch["type"], "message_batch");
    assert_eq!(batch["processing_status"], "in_progress");
    assert_eq!(
        batch["request_counts"],
        json!({"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    );
    assert_eq!(batch["results_url"], Value::Null);
    assert_eq!(batch["ended_at"], Value::Null);
    let at = |field: &str| humantime::parse_rfc3339(batch[field].as_str().unwrap()).unwrap();
    let window = at("expires_at").duration_since(at("created_at")).unwrap();
    assert_eq!(window, Duration::from_secs(24 * 60 * 60));

    let results_path = format!("/v1/messages/batches/{id}/results");
    let early = call(&sim, get(&results_path, KEY)).await;
    assert_eq!(early.status, 400);
    assert_eq!(early.json()["error"]["type"], "invalid_request_error");

    tokio::time::advance(DELAY).await;
    let ended = call(&sim, get(&format!("/v1/messages/batches/{id}"), KEY))
        .await
        .json();
    assert_eq!(ended["processing_status"], "ended");
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0})
    );
    assert_eq!(ended["results_url"], results_path);
    assert!(ended["ended_at"].is_string());

    let results = call(&sim, get(&results_path, KEY)).await;
    assert_eq!(results.status, 200);
    let results = lines(&results);
    let ids: Vec<&str> = results
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["first", "broken", "third"]);
    for (record, tokens) in [(&results[0], 5), (&results[2], 7)] {
        assert_eq!(record["result"]["type"], "succeeded");
        let message = &record["result"]["message"];
        assert_eq!(message["type"], "message");
        assert_eq!(message["usage"]["output_tokens"], tokens);
        assert_eq!(message["stop_reason"], "max_tokens");
    }
    let errored = &results[1]["result"];
    assert_eq!(errored["type"], "errored");
    assert_eq!(errored["error"]["type"], "error");
    assert_eq!(errored["error"]["error"]["type"], "invalid_request_error");
    assert!(
        errored["error"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
}

#[tokio::test(start_paused = true)]
async fn canceled_batches_end_without_answers() {
    let sim = sim(1);
    let file = call(&sim, upload(BASE, KEY, "batch", &input()))
        .await
        .json();
    let batch = call(
        &sim,
        request(
            BASE,
            "/v1/batches",
            KEY,
            &create(file["id"].as_str().unwrap()),
        ),
    )
    .await
    .json();
    let id = batch["id"].as_str().unwrap();
    tokio::time::advance(DELAY / 4).await;
    let cancel = Request::post(format!("{BASE}/v1/batches/{id}/cancel"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::default())
        .unwrap();
    assert_eq!(call(&sim, cancel).await.json()["status"], "cancelling");
    tokio::time::advance(DELAY).await;
    let cancelled = call(&sim, get(&format!("/v1/batches/{id}"), KEY))
        .await
        .json();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["cancelled_at"].is_u64());
    assert_eq!(cancelled["output_file_id"], Value::Null);

    let batch = call(
        &sim,
        request(BASE, "/v1/messages/batches", KEY, &message_requests()),
    )
    .await
    .json();
    let path = format!("/v1/messages/batches/{}", batch["id"].as_str().unwrap());
    let cancel = Request::post(format!("{BASE}{path}/cancel"))
        .header("x-api-key", KEY)
        .body(Full::default())
        .unwrap();
    let canceling = call(&sim, cancel).await.json();
    assert_eq!(canceling["processing_status"], "canceling");
    assert!(canceling["cancel_initiated_at"].is_string());
    tokio::time::advance(DELAY).await;
    let ended = call(&sim, get(&path, KEY)).await.json();
    assert_eq!(ended["processing_status"], "ended");
    assert_eq!(ended["request_counts"]["canceled"], 3);
    let results = lines(&call(&sim, get(&format!("{path}/results"), KEY)).await);
    assert!(
        results
            .iter()
            .all(|r| r["result"] == json!({"type": "canceled"}))
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_keys_are_401_on_every_batch_route() {
    let sim = sim(1);
    let replies = [
        call(&sim, upload(BASE, "sk-nope", "batch", &input())).await,
        call(
            &sim,
            request(BASE, "/v1/batches", "sk-nope", &create("file-x")),
        )
        .await,
        call(&sim, get("/v1/batches/batch_x", "sk-nope")).await,
        call(&sim, get("/v1/files/file-x/content", "sk-nope")).await,
        call(
            &sim,
            request(BASE, "/v1/messages/batches", "sk-nope", &message_requests()),
        )
        .await,
        call(
            &sim,
            get("/v1/messages/batches/msgbatch_x/results", "sk-nope"),
        )
        .await,
    ];
    for reply in &replies {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
    }
    assert_eq!(replies[0].json()["error"]["code"], "invalid_api_key");
    assert_eq!(replies[4].json()["error"]["type"], "authentication_error");
    assert_eq!(sim.stats().rejected(Rejection::Unauthorized), 6);
}

#[tokio::test(start_paused = true)]
async fn unknown_batches_and_files_are_404() {
    let sim = sim(1);
    let replies = [
        call(&sim, get("/v1/batches/batch_nope", KEY)).await,
        call(&sim, get("/v1/files/file-nope/content", KEY)).await,
        call(&sim, get("/v1/files/file-nope", KEY)).await,
        call(
            &sim,
            request(BASE, "/v1/batches", KEY, &create("file-nope")),
        )
        .await,
    ];
    for reply in &replies {
        assert_eq!(reply.status, 404, "{:?}", reply.body);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
    for path in [
        "/v1/messages/batches/msgbatch_nope",
        "/v1/messages/batches/msgbatch_nope/results",
    ] {
        let reply = call(&sim, get(path, KEY)).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json()["error"]["type"], "not_found_error");
    }
    assert_eq!(sim.stats().rejected(Rejection::NotFound), 6);
}

#[tokio::test(start_paused = true)]
async fn bad_uploads_and_batches_are_400() {
    let sim = sim(1);
    let good = line("a", &chat("gpt-4o-mini", "x", 5));
    let cases = [
        ("fine-tune", good.clone(), "purpose"),
        (
            "batch",
            format!("{good}\n{{\"custom_id\": \"b\", "),
            "not valid JSON",
        ),
        (
            "batch",
            format!("{good}\n{}", line("b", &chat("gpt-4o", "x", 5))),
            "single model",
        ),
        ("batch", format!("{good}\n{good}"), "unique"),
        ("batch", String::new(), "no requests"),
    ];
    for (purpose, content, expected) in cases {
        let reply = call(&sim, upload(BASE, KEY, purpose, &content)).await;
        assert_eq!(reply.status, 400, "{content}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(expected), "{message}");
    }
    let not_multipart = request(BASE, "/v1/files", KEY, &json!({"purpose": "batch"}));
    assert_eq!(call(&sim, not_multipart).await.status, 400);

    let file = call(&sim, upload(BASE, KEY, "batch", &good)).await.json();
    let file_id = file["id"].as_str().unwrap();
    for (field, value) in [("endpoint", "/v1/completions"), ("completion_window", "1h")] {
        let mut body = create(file_id);
        body[field] = json!(value);
        assert_eq!(
            call(&sim, request(BASE, "/v1/batches", KEY, &body))
                .await
                .status,
            400
        );
    }
    let no_requests = json!({"requests": []});
    let reply = call(
        &sim,
        request(BASE, "/v1/messages/batches", KEY, &no_requests),
    )
    .await;
    assert_eq!(reply.status, 400);
    let bad_id = json!({"requests": [{"custom_id": "has space", "params": {}}]});
    assert_eq!(
        call(&sim, request(BASE, "/v1/messages/batches", KEY, &bad_id))
            .await
            .status,
        400
    );
    assert_eq!(sim.stats().rejected(Rejection::BadRequest), 10);
}

#[tokio::test(start_paused = true)]
async fn exhausted_keys_upload_but_create_no_batch() {
    let config = SimConfig::from_toml("[[keys]]\nkey = \"sk-broke\"\nquota_exhausted = true\n");
    let sim = SimService::new(config.unwrap()).unwrap();
    let file = call(&sim, upload(BASE, "sk-broke", "batch", &input())).await;
    assert_eq!(file.status, 200);
    let body = create(file.json()["id"].as_str().unwrap());
    let reply = call(&sim, request(BASE, "/v1/batches", "sk-broke", &body)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["code"], "insufficient_quota");
    let reply = call(
        &sim,
        request(
            BASE,
            "/v1/messages/batches",
            "sk-broke",
            &message_requests(),
        ),
    );
    assert_eq!(reply.await.status, 400);
    assert_eq!(sim.stats().rejected(Rejection::QuotaExhausted), 2);
}

#[tokio::test(start_paused = true)]
async fn a_line_for_another_endpoint_fails_the_batch() {
    let sim = sim(1);
    let content = json!({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "hi"}});
    let file = call(&sim, upload(BASE, KEY, "batch", &content.to_string()))
        .await
        .json();
    let batch = call(
        &sim,
        request(
            BASE,
            "/v1/batches",
            KEY,
            &create(file["id"].as_str().unwrap()),
        ),
    )
    .await
    .json();
    tokio::time::advance(DELAY).await;
    let failed = call(
        &sim,
        get(
            &format!("/v1/batches/{}", batch["id"].as_str().unwrap()),
            KEY,
        ),
    )
    .await
    .json();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["errors"]["data"][0]["line"], 1);
    assert!(failed["failed_at"].is_u64());
}

/// The output without its wall-clock fields (two simulators start at different wall times).
fn without_clock(reply: &Reply) -> Vec<Value> {
    let mut lines = lines(reply);
    for line in &mut lines {
        line["response"]["body"]["created"] = Value::Null;
    }
    lines
}

#[tokio::test(start_paused = true)]
async fn results_are_a_function_of_the_seed() {
    let (a, b, c) = (sim(42), sim(42), sim(43));
    // Unrelated traffic on one of them does not move the batch's answers.
    call(
        &b,
        request(BASE, "/v1/chat/completions", KEY, &chat("m", "x", 5)),
    )
    .await;
    let (out_a, _) = openai_flow(&a).await;
    let (out_b, _) = openai_flow(&b).await;
    let (out_c, _) = openai_flow(&c).await;
    assert_eq!(without_clock(&out_a), without_clock(&out_b));
    assert_ne!(without_clock(&out_a), without_clock(&out_c));
    let again = call(&a, get("/v1/files/file-simout0000000000001/content", KEY)).await;
    assert_eq!(again.body, out_a.body, "the same bytes every time");

    let mut results = Vec::new();
    for sim in [&a, &b] {
        let batch = call(
            sim,
            request(BASE, "/v1/messages/batches", KEY, &message_requests()),
        )
        .await
        .json();
        tokio::time::advance(DELAY).await;
        let path = format!(
            "/v1/messages/batches/{}/results",
            batch["id"].as_str().unwrap()
        );
        results.push(call(sim, get(&path, KEY)).await.body);
    }
    assert_eq!(results[0], results[1], "byte for byte");
}

#[tokio::test]
async fn a_batch_over_loopback() {
    let sim = Sim::start(config(3, "0s")).await.unwrap();
    let client = client();
    let file = send(&client, upload(&sim.url(), KEY, "batch", &input())).await;
    assert_eq!(file.status, 200, "{:?}", file.body);
    let file_id = file.json()["id"].as_str().unwrap().to_owned();
    let batch = send(
        &client,
        request(&sim.url(), "/v1/batches", KEY, &create(&file_id)),
    )
    .await
    .json();
    let path = format!("{}/v1/batches/{}", sim.url(), batch["id"].as_str().unwrap());
    let get = |uri: String| {
        Request::get(uri)
            .header("authorization", format!("Bearer {KEY}"))
            .body(Full::default())
            .unwrap()
    };
    let done = send(&client, get(path)).await.json();
    assert_eq!(done["status"], "completed");
    let output_id = done["output_file_id"].as_str().unwrap();
    let output = send(
        &client,
        get(format!("{}/v1/files/{output_id}/content", sim.url())),
    )
    .await;
    assert_eq!(output.header("content-type"), "application/octet-stream");
    assert_eq!(lines(&output).len(), 3);
    sim.shutdown().await;
}
