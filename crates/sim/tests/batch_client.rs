//! What a durable batch client leans on, in-process under paused time: listing batches a page at
//! a time (to find them again after a restart), batches that expire with partial results,
//! uploads that fail with a 500, and the introspection a test checks submissions with.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Reply, call, chat, client, get, jsonl, request, send, upload};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use tollgate_sim::{BatchApi, Rejection, Sim, SimConfig, SimService};

const KEY: &str = "sk-batch";
const BASE: &str = "http://sim";

fn simulator(extra: &str) -> SimService {
    let config = SimConfig::from_toml(&format!(
        "seed = 5\n[output]\nmin_tokens = 8\nmax_tokens = 16\n[batch]\ncompletion_delay = \"100s\"\n{extra}"
    ))
    .expect("a valid scenario");
    SimService::new(config).expect("a valid config")
}

/// A chat request for each of `custom_ids`, as JSONL.
fn lines_for(custom_ids: &[String]) -> String {
    custom_ids
        .iter()
        .map(|id| {
            json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
                "body": chat("gpt-4o-mini", "hello", 4)})
            .to_string()
                + "\n"
        })
        .collect()
}

/// `n` chat requests as JSONL, `job-1` to `job-n`.
fn input(n: usize) -> String {
    let ids: Vec<String> = (1..=n).map(|i| format!("job-{i}")).collect();
    lines_for(&ids)
}

async fn upload_file(sim: &SimService, content: &str) -> String {
    let file = call(sim, upload(BASE, KEY, "batch", content)).await;
    assert_eq!(file.status, 200, "{:?}", file.body);
    file.json()["id"].as_str().unwrap().to_owned()
}

/// Creates an OpenAI batch from `file_id` with `metadata`; its object.
async fn create_batch(sim: &SimService, file_id: &str, metadata: Value) -> Value {
    let body = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": metadata});
    let reply = call(sim, request(BASE, "/v1/batches", KEY, &body)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()
}

/// Creates a message batch of `ids`; its object.
async fn create_message_batch(sim: &SimService, ids: &[&str]) -> Value {
    let requests: Vec<Value> = ids
        .iter()
        .map(|id| json!({"custom_id": id, "params": chat("claude-haiku-4-5", "hello", 4)}))
        .collect();
    let body = json!({ "requests": requests });
    let reply = call(sim, request(BASE, "/v1/messages/batches", KEY, &body)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()
}

async fn list(sim: &SimService, path: &str) -> Value {
    let reply = call(sim, get(BASE, path, KEY)).await;
    assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
    reply.json()
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|batch| batch["id"].as_str().unwrap())
        .collect()
}

fn time_field(object: &Value, field: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(object[field].as_str().unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn openai_lists_batches_newest_first_with_their_metadata() {
    let sim = simulator("");
    let file_id = upload_file(&sim, &input(2)).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let batch =
            create_batch(&sim, &file_id, json!({"queue": "q", "slot": i.to_string()})).await;
        created.push(batch["id"].as_str().unwrap().to_owned());
    }
    // Message batches are Anthropic's list, not OpenAI's.
    create_message_batch(&sim, &["m"]).await;
    let newest: Vec<&str> = created.iter().rev().map(String::as_str).collect();

    let first = list(&sim, "/v1/batches?limit=2").await;
    assert_eq!(first["object"], "list");
    assert_eq!(ids(&first), newest[..2]);
    assert_eq!(first["first_id"], newest[0]);
    assert_eq!(first["last_id"], newest[1]);
    assert_eq!(first["has_more"], true);
    let batch = &first["data"][0];
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["metadata"], json!({"queue": "q", "slot": "4"}));

    let second = list(&sim, &format!("/v1/batches?limit=2&after={}", newest[1])).await;
    assert_eq!(ids(&second), newest[2..4]);
    assert_eq!(second["has_more"], true);
    let last = list(&sim, &format!("/v1/batches?limit=2&after={}", newest[3])).await;
    assert_eq!(ids(&last), newest[4..]);
    assert_eq!(last["has_more"], false);
    assert_eq!(last["data"][0]["metadata"]["slot"], "0");
    let beyond = list(&sim, &format!("/v1/batches?after={}", newest[4])).await;
    assert_eq!(
        beyond,
        json!({"object": "list", "data": [], "first_id": null, "last_id": null,
            "has_more": false})
    );

    // The default page (20) holds them all; listed batches are as current as retrieved ones.
    tokio::time::advance(Duration::from_secs(100)).await;
    let all = list(&sim, "/v1/batches").await;
    assert_eq!(ids(&all), newest);
    assert_eq!(all["has_more"], false);
    for batch in all["data"].as_array().unwrap() {
        assert_eq!(batch["status"], "completed");
        assert!(batch["output_file_id"].is_string(), "{batch}");
        assert_eq!(batch["request_counts"]["completed"], 2);
    }
    let retrieved = call(&sim, get(BASE, &format!("/v1/batches/{}", newest[0]), KEY)).await;
    assert_eq!(retrieved.json(), all["data"][0]);

    for bad in [
        "/v1/batches?limit=0",
        "/v1/batches?limit=101",
        "/v1/batches?limit=many",
        "/v1/batches?after=batch_unknown",
    ] {
        let reply = call(&sim, get(BASE, bad, KEY)).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        list(&sim, "/v1/batches?limit=100").await["data"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn anthropic_lists_message_batches_both_ways() {
    let sim = simulator("");
    let mut created = Vec::new();
    for i in 0..5 {
        let batch = create_message_batch(&sim, &[&format!("job-{i}")]).await;
        created.push(batch["id"].as_str().unwrap().to_owned());
    }
    let file_id = upload_file(&sim, &input(1)).await;
    create_batch(&sim, &file_id, Value::Null).await;
    let newest: Vec<&str> = created.iter().rev().map(String::as_str).collect();

    let first = list(&sim, "/v1/messages/batches?limit=2").await;
    assert_eq!(ids(&first), newest[..2]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["first_id"], newest[0]);
    assert_eq!(first["last_id"], newest[1]);
    assert_eq!(
        first.get("object"),
        None,
        "Anthropic's list has no object field"
    );
    assert_eq!(first["data"][0]["type"], "message_batch");
    assert_eq!(first["data"][0]["processing_status"], "in_progress");

    let next = list(
        &sim,
        &format!("/v1/messages/batches?limit=2&after_id={}", newest[1]),
    )
    .await;
    assert_eq!(ids(&next), newest[2..4]);
    assert_eq!(next["has_more"], true);
    let last = list(
        &sim,
        &format!("/v1/messages/batches?limit=2&after_id={}", newest[3]),
    )
    .await;
    assert_eq!(ids(&last), newest[4..]);
    assert_eq!(last["has_more"], false);
    // And back: the page just before (newer than) a batch.
    let back = list(
        &sim,
        &format!("/v1/messages/batches?limit=2&before_id={}", newest[3]),
    )
    .await;
    assert_eq!(ids(&back), newest[1..3]);
    assert_eq!(back["has_more"], true);
    let top = list(
        &sim,
        &format!("/v1/messages/batches?limit=2&before_id={}", newest[1]),
    )
    .await;
    assert_eq!(ids(&top), newest[..1]);
    assert_eq!(top["has_more"], false);

    tokio::time::advance(Duration::from_secs(100)).await;
    let all = list(&sim, "/v1/messages/batches?limit=1000").await;
    assert_eq!(ids(&all), newest);
    for batch in all["data"].as_array().unwrap() {
        assert_eq!(batch["processing_status"], "ended");
        assert_eq!(batch["request_counts"]["succeeded"], 1);
    }

    for bad in [
        "/v1/messages/batches?limit=0",
        "/v1/messages/batches?limit=1001",
        "/v1/messages/batches?after_id=a&before_id=b",
        "/v1/messages/batches?after_id=msgbatch_unknown",
    ] {
        let reply = call(&sim, get(BASE, bad, KEY)).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
}

/// The output lines without the fields that tell when they were written.
fn without_clock(reply: &Reply) -> Vec<Value> {
    let mut lines = jsonl(reply);
    for line in &mut lines {
        line["response"]["body"]["created"] = Value::Null;
    }
    lines
}

#[tokio::test(start_paused = true)]
async fn an_expired_openai_batch_keeps_the_results_it_had() {
    // 40 s of a 100 s batch: the first 2 of 5 requests ran.
    let sim = simulator("expire_after = \"40s\"");
    let file_id = upload_file(&sim, &input(5)).await;
    let batch = create_batch(&sim, &file_id, json!({"queue": "q"})).await;
    let id = batch["id"].as_str().unwrap();
    let created_at = batch["created_at"].as_u64().unwrap();
    assert_eq!(batch["expires_at"].as_u64().unwrap(), created_at + 40);

    tokio::time::advance(Duration::from_millis(39_999)).await;
    let path = format!("/v1/batches/{id}");
    assert_eq!(
        call(&sim, get(BASE, &path, KEY)).await.json()["status"],
        "in_progress"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let expired = call(&sim, get(BASE, &path, KEY)).await.json();
    assert_eq!(expired["status"], "expired");
    assert_eq!(expired["expired_at"].as_u64().unwrap(), created_at + 40);
    assert_eq!(expired["completed_at"], Value::Null);
    assert!(expired["in_progress_at"].is_u64());
    assert_eq!(
        expired["request_counts"],
        json!({"total": 5, "completed": 2, "failed": 3})
    );
    assert_eq!(expired["metadata"], json!({"queue": "q"}));

    let content = |file: &Value| format!("/v1/files/{}/content", file.as_str().unwrap());
    let output = call(&sim, get(BASE, &content(&expired["output_file_id"]), KEY)).await;
    let errors = jsonl(&call(&sim, get(BASE, &content(&expired["error_file_id"]), KEY)).await);
    let output_lines = jsonl(&output);
    let output_ids: Vec<&str> = output_lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(output_ids, ["job-1", "job-2"]);
    let error_ids: Vec<&str> = errors
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(error_ids, ["job-3", "job-4", "job-5"]);
    for line in &errors {
        assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(line["response"], Value::Null);
        assert_eq!(
            line["error"],
            json!({"code": "batch_expired",
                "message": "This request could not be executed before the completion window expired."})
        );
    }
    // Over: it cannot be canceled, and the list shows it expired too.
    let cancel = Request::post(format!("{BASE}{path}/cancel"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(call(&sim, cancel).await.status, 400);
    assert_eq!(
        list(&sim, "/v1/batches").await["data"][0]["status"],
        "expired"
    );

    // The lines that ran are the very ones a batch with time to finish writes.
    let unhurried = simulator("");
    let file_id = upload_file(&unhurried, &input(5)).await;
    let batch = create_batch(&unhurried, &file_id, Value::Null).await;
    tokio::time::advance(Duration::from_secs(100)).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let done = call(&unhurried, get(BASE, &path, KEY)).await.json();
    assert_eq!(done["status"], "completed");
    let full = call(
        &unhurried,
        get(BASE, &content(&done["output_file_id"]), KEY),
    )
    .await;
    assert_eq!(without_clock(&full)[..2], without_clock(&output)[..]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_message_batch_ends_with_expired_results() {
    let sim = simulator("expire_after = \"40s\"");
    let batch = create_message_batch(&sim, &["a", "b", "c", "d", "e"]).await;
    let path = format!("/v1/messages/batches/{}", batch["id"].as_str().unwrap());
    let window = time_field(&batch, "expires_at")
        .duration_since(time_field(&batch, "created_at"))
        .unwrap();
    assert_eq!(window, Duration::from_secs(40));

    tokio::time::advance(Duration::from_secs(40)).await;
    let ended = call(&sim, get(BASE, &path, KEY)).await.json();
    assert_eq!(ended["processing_status"], "ended");
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 3})
    );
    assert_eq!(ended["ended_at"], ended["expires_at"]);
    assert_eq!(ended["results_url"], format!("{path}/results"));

    let results = jsonl(&call(&sim, get(BASE, &format!("{path}/results"), KEY)).await);
    let kinds: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["custom_id"].as_str().unwrap(),
                r["result"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("a", "succeeded"),
            ("b", "succeeded"),
            ("c", "expired"),
            ("d", "expired"),
            ("e", "expired")
        ]
    );
    assert_eq!(results[4]["result"], json!({"type": "expired"}));
    assert_eq!(sim.batches()[0].status, "ended");
}

#[tokio::test(start_paused = true)]
async fn uploads_fail_at_rate_one_and_never_at_zero() {
    let failing = simulator("upload_error_rate = 1.0");
    for _ in 0..3 {
        let reply = call(&failing, upload(BASE, KEY, "batch", &input(2))).await;
        assert_eq!(reply.status, 500);
        let error = &reply.json()["error"];
        assert_eq!(error["type"], "server_error");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("server had an error")
        );
    }
    // Nothing was stored: no file to read, none to batch.
    let reply = call(
        &failing,
        get(BASE, "/v1/files/file-sim0000000000000001", KEY),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(failing.stats().rejected(Rejection::ServerError), 3);
    // A malformed file is refused as such, whatever the rate.
    let reply = call(&failing, upload(BASE, KEY, "batch", "{\"custom_id\": ")).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let healthy = simulator("upload_error_rate = 0.0");
    for _ in 0..50 {
        assert_eq!(
            call(&healthy, upload(BASE, KEY, "batch", &input(1)))
                .await
                .status,
            200
        );
    }

    // In between, the same seed fails the same uploads.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = simulator("upload_error_rate = 0.5");
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(
                call(&sim, upload(BASE, KEY, "batch", &input(1)))
                    .await
                    .status
                    .as_u16(),
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&500) && runs[0].contains(&200),
        "{:?}",
        runs[0]
    );
}

#[tokio::test(start_paused = true)]
async fn introspection_shows_every_batch_and_its_jobs() {
    let sim = simulator("");
    assert!(sim.batches().is_empty());
    let file_a = upload_file(&sim, &input(3)).await;
    let a = create_batch(&sim, &file_a, Value::Null).await;
    let b = create_message_batch(&sim, &["job-4", "job-5"]).await;
    let file_c = upload_file(&sim, &lines_for(&["job-6".into()])).await;
    let c = create_batch(&sim, &file_c, Value::Null).await;

    let batches = sim.batches();
    let summary: Vec<(&str, BatchApi, &str)> = batches
        .iter()
        .map(|s| (s.id.as_str(), s.api, s.status.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (a["id"].as_str().unwrap(), BatchApi::OpenAi, "validating"),
            (
                b["id"].as_str().unwrap(),
                BatchApi::Anthropic,
                "in_progress"
            ),
            (c["id"].as_str().unwrap(), BatchApi::OpenAi, "validating"),
        ]
    );
    assert_eq!(batches[0].custom_ids, ["job-1", "job-2", "job-3"]);
    assert_eq!(batches[1].custom_ids, ["job-4", "job-5"]);
    assert_eq!(batches[2].custom_ids, ["job-6"]);

    // What a client test asserts: every job in exactly one batch.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in batches.iter().flat_map(|s| &s.custom_ids) {
        *seen.entry(id).or_default() += 1;
    }
    let jobs = ["job-1", "job-2", "job-3", "job-4", "job-5", "job-6"];
    assert_eq!(seen.len(), jobs.len());
    assert!(jobs.iter().all(|job| seen.get(job) == Some(&1)), "{seen:?}");

    tokio::time::advance(Duration::from_secs(100)).await;
    let statuses: Vec<String> = sim.batches().into_iter().map(|s| s.status).collect();
    assert_eq!(statuses, ["completed", "ended", "completed"]);
    sim.reset();
    assert_eq!(sim.batches().len(), 3, "a reset keeps the batches");
}

#[tokio::test]
async fn introspection_over_loopback() {
    let config = SimConfig::from_toml("[batch]\ncompletion_delay = \"0s\"").unwrap();
    let sim = Sim::start(config).await.unwrap();
    let client = client();
    let file = send(&client, upload(&sim.url(), KEY, "batch", &input(2))).await;
    let body = json!({"input_file_id": file.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"});
    let batch = send(&client, request(&sim.url(), "/v1/batches", KEY, &body))
        .await
        .json();
    let listed = send(&client, get(&sim.url(), "/v1/batches?limit=1", KEY))
        .await
        .json();
    assert_eq!(listed["data"][0]["id"], batch["id"]);
    assert_eq!(listed["data"][0]["status"], "completed");
    let batches = sim.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].id, batch["id"].as_str().unwrap());
    assert_eq!(batches[0].custom_ids, ["job-1", "job-2"]);
    sim.shutdown().await;
}

#[test]
fn batch_settings_are_validated() {
    let config = SimConfig::from_toml(
        "[batch]\ncompletion_delay = \"1h\"\nexpire_after = \"30m\"\nupload_error_rate = 0.25",
    )
    .unwrap();
    assert_eq!(config.batch.expire_after, Some(Duration::from_secs(1800)));
    assert_eq!(config.batch.upload_error_rate, 0.25);
    assert_eq!(SimConfig::default().batch.expire_after, None);
    for (toml, expected) in [
        (
            "[batch]\nexpire_after = \"0s\"",
            "batch.expire_after: 0s must be positive",
        ),
        (
            "[batch]\nexpire_after = \"25h\"",
            "batch.expire_after: 1day 1h must be at most 24h",
        ),
        (
            "[batch]\nupload_error_rate = 1.5",
            "batch.upload_error_rate: 1.5",
        ),
        (
            "[batch]\nupload_error_rate = -0.1",
            "batch.upload_error_rate",
        ),
    ] {
        let error = SimConfig::from_toml(toml).unwrap_err().to_string();
        assert!(error.contains(expected), "{toml:?}: {error}");
    }
}
