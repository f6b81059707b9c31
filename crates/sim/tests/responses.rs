//! OpenAI's Responses API (`POST /v1/responses`): the response object, its stream event by
//! event at the latency model's pace, and the same limits, faults, keys and stats as chat
//! completions.

mod common;

use std::time::Duration;

use common::{Reply, call, request};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::time::Instant;
use tollgate_sim::{Rejection, SimConfig, SimService};

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

/// Ten tokens an answer, unless a scenario says otherwise.
const TEN: &str = "[output]\nmin_tokens = 10\nmax_tokens = 10\n";

async fn create(sim: &SimService, key: &str, body: &Value) -> Reply {
    call(sim, request("http://sim", "/v1/responses", key, body)).await
}

/// The SSE events of `reply` as (event name, data) pairs.
fn events(reply: &Reply) -> Vec<(String, Value)> {
    reply
        .events()
        .into_iter()
        .map(|(name, data)| (name, serde_json::from_str(&data).unwrap()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_response_object_carries_what_the_sdk_requires() {
    let sim = sim(TEN);
    let body = json!({"model": "gpt-4o-mini", "instructions": "You are terse.",
        "input": "Hello!", "metadata": {"run": "7"}});
    let reply = create(&sim, "sk", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert!(reply.header("x-request-id").starts_with("req_"));
    assert!(!reply.header("x-ratelimit-remaining-tokens").is_empty());
    let response = reply.json();
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    let fixed = [
        ("object", json!("response")),
        ("status", json!("completed")),
        ("model", json!("gpt-4o-mini")),
        ("error", Value::Null),
        ("incomplete_details", Value::Null),
        ("instructions", json!("You are terse.")),
        ("metadata", json!({"run": "7"})),
        ("parallel_tool_calls", json!(true)),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        (
            "text",
            json!({"format": {"type": "text"}, "verbosity": "medium"}),
        ),
    ];
    for (field, value) in fixed {
        assert_eq!(response[field], value, "{field}");
    }
    assert!(response["created_at"].as_u64().unwrap() > 1_700_000_000);
    let message = &response["output"][0];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (&message["type"], &message["status"], &message["role"]),
        (&json!("message"), &json!("completed"), &json!("assistant"))
    );
    let part = &message["content"][0];
    assert_eq!(
        (&part["type"], &part["annotations"]),
        (&json!("output_text"), &json!([]))
    );
    let words = part["text"].as_str().unwrap().split(' ').count();
    assert_eq!(words, 10);
    // 3 to prime, 3 + 4 for the instructions, 3 + 2 for the input.
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 15, "input_tokens_details": {"cached_tokens": 0,
            "cache_write_tokens": 0}, "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25})
    );
}

#[tokio::test(start_paused = true)]
async fn max_output_tokens_cuts_the_answer_to_incomplete() {
    let sim = sim("[output]\nmin_tokens = 40\nmax_tokens = 40\n");
    let body = json!({"model": "gpt-4o-mini", "max_output_tokens": 16,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}]});
    let response = create(&sim, "sk", &body).await.json();
    assert_eq!(response["status"], "incomplete");
    assert_eq!(
        response["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(response["max_output_tokens"], 16);
    assert_eq!(response["output"][0]["status"], "incomplete");
    assert_eq!(response["usage"]["output_tokens"], 16);
    assert_eq!(response["usage"]["input_tokens"], 3 + 3 + 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_runs_the_event_sequence_at_the_latency_models_pace() {
    let sim = sim(&format!(
        "[latency]\ntime_to_first_token = \"400ms\"\nper_output_token = \"20ms\"\n{TEN}"
    ));
    let body = json!({"model": "gpt-4o-mini", "input": "Hello!", "stream": true});
    let start = Instant::now();
    let response = tower::ServiceExt::oneshot(
        sim.clone(),
        request("http://sim", "/v1/responses", "sk", &body),
    )
    .await
    .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(400));
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let chunk = frame.unwrap().into_data().unwrap();
        arrivals.push(start.elapsed().as_millis());
        bytes.extend_from_slice(&chunk);
    }
    let reply = Reply {
        status: http::StatusCode::OK,
        headers: http::HeaderMap::new(),
        body: bytes.into(),
    };
    let events = events(&reply);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(["response.output_text.delta"; 10]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[0].1["response"]["usage"], Value::Null);
    let deltas: String = events[4..14]
        .iter()
        .map(|(_, data)| {
            assert_eq!(
                (&data["output_index"], &data["content_index"]),
                (&json!(0), &json!(0))
            );
            data["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(events[14].1["text"], deltas.as_str());
    let completed = &events[17].1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(
        completed["output"][0]["content"][0]["text"],
        deltas.as_str()
    );
    assert_eq!(completed["usage"]["output_tokens"], 10);
    assert_eq!(events[2].1["item"]["id"], events[4].1["item_id"]);
    // Everything up to the first delta at 400 ms, one token every 20 ms, the end 20 ms later.
    assert_eq!(arrivals[..5], [400; 5]);
    assert_eq!(arrivals[13], 400 + 9 * 20);
    assert_eq!(arrivals[14..], [400 + 10 * 20; 4]);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_by_max_output_tokens_ends_incomplete() {
    let sim = sim("[output]\nmin_tokens = 30\nmax_tokens = 30\n");
    let body = json!({"model": "m", "input": "x", "stream": true, "max_output_tokens": 20});
    let events = events(&create(&sim, "sk", &body).await);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
    assert_eq!(last["response"]["usage"]["output_tokens"], 20);
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    let done = &events[events.len() - 2].1;
    assert_eq!(done["item"]["status"], "incomplete");
}

#[tokio::test(start_paused = true)]
async fn limits_charge_the_prompt_and_max_output_tokens() {
    let sim = sim(&format!(
        "[[keys]]\nkey = \"sk\"\nrequests_per_minute = 10\ntokens_per_minute = 1000\n{TEN}"
    ));
    let body = |max: u64| json!({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": max});
    let reply = create(&sim, "sk", &body(500)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), "1000");
    // 7 prompt tokens + 500 charged at admission.
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), "493");
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "9");
    // The answer used 10 of the 500: 490 came back.
    let reply = create(&sim, "sk", &body(980)).await;
    assert_eq!(reply.status, 429);
    let error = &reply.json()["error"];
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("tokens"), &json!("rate_limit_exceeded"))
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit reached for gpt-4o-mini"),
        "{error}"
    );
    assert!(!reply.header("retry-after-ms").is_empty());
    let too_large = create(&sim, "sk", &body(2000)).await;
    assert_eq!(too_large.status, 429);
    assert!(
        too_large.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large")
    );
    assert_eq!(sim.stats().rejected(Rejection::RateLimited), 1);
    assert_eq!(sim.stats().rejected(Rejection::TooLarge), 1);
}

#[tokio::test(start_paused = true)]
async fn keys_and_faults_answer_as_chat_does() {
    let sim = self::sim("[[keys]]\nkey = \"sk\"\n");
    let body = json!({"model": "m", "input": "x"});
    let reply = create(&sim, "sk-unknown", &body).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["code"], "invalid_api_key");

    let sim = self::sim("[faults]\noverload_rate = 1.0\noverload_status = 529\n");
    let reply = create(&sim, "sk", &body).await;
    assert_eq!(reply.status, 529);
    assert_eq!(reply.json()["error"]["type"], "server_error");

    let sim = self::sim("[faults]\nerror_rate = 1.0\n");
    let reply = create(&sim, "sk", &body).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["type"], "server_error");

    let sim = self::sim("[faults]\nhang_rate = 1.0\n");
    let hung = tokio::time::timeout(Duration::from_secs(600), create(&sim, "sk", &body)).await;
    assert!(hung.is_err(), "a hung request never answers");
    assert_eq!(sim.stats().hung, 1);

    let sim = self::sim(&format!("[faults]\nstream_error_rate = 1.0\n{TEN}"));
    let stream = json!({"model": "m", "input": "x", "stream": true});
    let reply = create(&sim, "sk", &stream).await;
    assert_eq!(reply.status, 200);
    let events = events(&reply);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
    let (_, error) = &events[events.len() - 2];
    assert_eq!(error["code"], "server_error");
    let (_, failed) = &events[events.len() - 1];
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["code"], "server_error");
    assert!(!names.contains(&"response.completed"));
    assert_eq!(sim.stats().stream_errors, 1);

    let sim = self::sim(&format!("[faults]\nstream_disconnect_rate = 1.0\n{TEN}"));
    let response = tower::ServiceExt::oneshot(
        sim.clone(),
        request("http://sim", "/v1/responses", "sk", &stream),
    )
    .await
    .unwrap();
    let cut = response.into_body().collect().await;
    assert!(cut.is_err(), "the connection drops mid-stream");
    assert_eq!(sim.stats().streams_disconnected, 1);
}

#[tokio::test(start_paused = true)]
async fn stats_and_the_log_count_responses_like_chat_calls() {
    let sim = sim(&format!("[[keys]]\nkey = \"sk\"\nname = \"prod\"\n{TEN}"));
    for stream in [false, true] {
        let body = json!({"model": "gpt-4o", "input": "Hello!", "stream": stream});
        assert_eq!(create(&sim, "sk", &body).await.status, 200);
    }
    let stats = sim.stats();
    assert_eq!((stats.received, stats.accepted), (2, 2));
    let usage = stats.keys["prod"];
    assert_eq!(
        (usage.requests, usage.input_tokens, usage.output_tokens),
        (2, 2 * 8, 2 * 10)
    );
    assert_eq!(stats.input_tokens, 16);
    let log = sim.log();
    assert_eq!(log[0].route, "POST /v1/responses");
    assert_eq!(log[0].model.as_deref(), Some("gpt-4o"));
    assert_eq!((log[0].stream, log[1].stream), (false, true));
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_openai_400s() {
    let sim = sim("");
    let reply = create(&sim, "sk", &json!({"model": "m"})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!({"error": {"message": "Missing required parameter: 'input'.",
            "type": "invalid_request_error", "param": null, "code": null}})
    );
    let reply = create(
        &sim,
        "sk",
        &json!({"model": "m", "input": "x", "max_output_tokens": 8}),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(sim.stats().rejected(Rejection::BadRequest), 2);
}
