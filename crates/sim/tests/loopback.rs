//! The simulator over real HTTP on loopback, through a plain hyper client: headers and bodies
//! exactly as the providers send them, every failure mode, HTTP/1.1 and h2c.

mod common;

use std::time::{Duration, SystemTime};

use common::{Reply, chat, client, h2c_client, request, send};
use serde_json::json;
use tollgate_core::classify::classify_response;
use tollgate_core::{OutcomeKind, Provider, RateLimitDimension, RateLimitSnapshot};
use tollgate_sim::{Rejection, Sim, SimConfig};

fn config(toml: &str) -> SimConfig {
    SimConfig::from_toml(toml).expect("a valid scenario")
}

fn classify(reply: &Reply) -> tollgate_core::Outcome {
    classify_response(reply.status, &reply.headers, &reply.body, SystemTime::now())
}

#[tokio::test]
async fn openai_chat_json_with_exact_headers() {
    let sim = Sim::start(config(
        r#"
        [[keys]]
        key = "sk-a"
        name = "team-a"
        requests_per_minute = 60
        tokens_per_minute = 10000
        [output]
        min_tokens = 5
        max_tokens = 5
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
            "sk-a",
            &chat("gpt-4o-mini", "Hello!", 100),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("x-ratelimit-limit-requests"), "60");
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), "59");
    assert_eq!(reply.header("x-ratelimit-reset-requests"), "1s");
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), "10000");
    // 8 prompt tokens + 100 max_tokens are charged at admission.
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), "9892");
    assert_eq!(reply.header("x-ratelimit-reset-tokens"), "648ms");
    assert!(reply.header("x-request-id").starts_with("req_sim"));
    httpdate::parse_http_date(reply.header("date")).expect("an HTTP date");

    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let words = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .split(' ')
        .count();
    assert_eq!(words, 5);
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 13);

    // tollgate-core reads the headers back exactly.
    let snapshot =
        RateLimitSnapshot::from_headers(&reply.headers, Some(Provider::OpenAi), SystemTime::now());
    let tokens = snapshot.tokens.unwrap();
    assert_eq!(
        (tokens.limit, tokens.remaining, tokens.reset),
        (Some(10_000), Some(9_892), Some(Duration::from_millis(648)))
    );

    // The unused 95 output tokens were refunded once the answer was done.
    let reply = send(
        &client,
        request(
            &sim.url(),
            "/v1/chat/completions",
            "sk-a",
            &chat("gpt-4o-mini", "Hello!", 100),
        ),
    )
    .await;
    let remaining: u64 = reply
        .header("x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert!(
        (9_892 - 108 + 95..=9_892 - 108 + 95 + 2).contains(&remaining),
        "{remaining}"
    );
    let stats = sim.stats();
    assert_eq!((stats.received, stats.accepted), (2, 2));
    assert_eq!(stats.keys["team-a"].output_tokens, 10);
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_stream_with_usage_chunk() {
    let sim = Sim::start(config("[output]\nmin_tokens = 3\nmax_tokens = 3"))
        .await
        .unwrap();
    let body = json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hi"}]});
    let reply = send(
        &client(),
        request(&sim.url(), "/v1/chat/completions", "sk-any", &body),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    let events = reply.events();
    assert_eq!(
        events.len(),
        1 + 3 + 1 + 1 + 1,
        "role, 3 tokens, finish, usage, [DONE]"
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks[..5]
            .iter()
            .all(|c| c["usage"].is_null() && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[5]["usage"];
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(7), Some(3))
    );
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text.split(' ').count(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn anthropic_messages_json_and_stream() {
    let sim = Sim::start(config(
        r#"
        [[keys]]
        key = "sk-ant"
        requests_per_minute = 50
        input_tokens_per_minute = 40000
        output_tokens_per_minute = 8000
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
            "/v1/messages",
            "sk-ant",
            &chat("claude-sonnet-4-5", "Hello!", 1024),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("anthropic-ratelimit-requests-limit"), "50");
    assert_eq!(reply.header("anthropic-ratelimit-requests-remaining"), "49");
    assert_eq!(
        reply.header("anthropic-ratelimit-input-tokens-limit"),
        "40000"
    );
    assert_eq!(
        reply.header("anthropic-ratelimit-input-tokens-remaining"),
        "39000",
        "rounded down to the thousand"
    );
    assert_eq!(
        reply.header("anthropic-ratelimit-output-tokens-remaining"),
        "6000"
    );
    assert!(
        reply
            .headers
            .get("anthropic-ratelimit-tokens-limit")
            .is_none(),
        "no combined limit configured"
    );
    let snapshot = RateLimitSnapshot::from_headers(
        &reply.headers,
        Some(Provider::Anthropic),
        SystemTime::now(),
    );
    let output = snapshot.output_tokens.unwrap();
    // 1,024 of 8,000 taken: full again in 7.68 s, sent as a whole-second timestamp.
    assert!(
        matches!(output.reset, Some(reset) if reset >= Duration::from_secs(7) && reset <= Duration::from_secs(9)),
        "{output:?}"
    );
    let body = reply.json();
    assert_eq!(
        (body["type"].as_str(), body["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 8);
    assert_eq!(body["usage"]["output_tokens"], 4);

    let mut streamed = chat("claude-sonnet-4-5", "Hello!", 2);
    streamed["stream"] = json!(true);
    let reply = send(
        &client,
        request(&sim.url(), "/v1/messages", "sk-ant", &streamed),
    )
    .await;
    let names: Vec<String> = reply.events().into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let events = reply.events();
    let start: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["usage"]["input_tokens"], 8);
    let delta: serde_json::Value = serde_json::from_str(&events[6].1).unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 2);
    assert_eq!(
        delta["delta"]["stop_reason"], "max_tokens",
        "cut at max_tokens"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn embeddings_as_floats_and_base64() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = client();
    let body = json!({"model": "text-embedding-3-small", "input": ["alpha", "beta", "gamma"], "dimensions": 8});
    let reply = send(
        &client,
        request(&sim.url(), "/v1/embeddings", "sk-x", &body),
    )
    .await;
    assert_eq!(reply.status, 200);
    let json = reply.json();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(json["usage"]["prompt_tokens"], 3);

    let body = json!({"model": "text-embedding-3-small", "input": "alpha", "dimensions": 8, "encoding_format": "base64"});
    let reply = send(
        &client,
        request(&sim.url(), "/v1/embeddings", "sk-x", &body),
    )
    .await;
    use base64::Engine as _;
    let encoded = reply.json()["data"][0]["embedding"]
        .as_str()
        .unwrap()
        .to_owned();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let as_floats: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats, as_floats, "the same vector for the same input");
    sim.shutdown().await;
}

#[tokio::test]
async fn refusals_have_the_providers_exact_bodies() {
    let sim = Sim::start(config(
        r#"
        [[keys]]
        key = "sk-small"
        requests_per_minute = 2
        tokens_per_minute = 1000
        [[keys]]
        key = "sk-broke"
        quota_exhausted = true
    "#,
    ))
    .await
    .unwrap();
    let client = client();
    let url = sim.url();

    let reply = send(
        &client,
        request(
            &url,
            "/v1/chat/completions",
            "sk-unknown",
            &chat("gpt-4o", "x", 10),
        ),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["code"], "invalid_api_key");
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("sk-unknown"),
        "the key is never echoed"
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::AuthError);

    let reply = send(
        &client,
        request(&url, "/v1/messages", "sk-unknown", &chat("claude", "x", 10)),
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}, "request_id": reply.json()["request_id"]})
    );

    let reply = send(
        &client,
        request(
            &url,
            "/v1/chat/completions",
            "sk-broke",
            &chat("gpt-4o", "x", 10),
        ),
    )
    .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["type"], "insufficient_quota");
    assert_eq!(classify(&reply).kind, OutcomeKind::QuotaExhausted);

    let reply = send(
        &client,
        request(
            &url,
            "/v1/chat/completions",
            "sk-small",
            &chat("gpt-4o", "x", 5000),
        ),
    )
    .await;
    assert_eq!(reply.status, 429);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("Request too large for gpt-4o in organization org-sim on tokens per min (TPM): Limit 1000, Requested 5007."), "{message}");
    assert_eq!(classify(&reply).kind, OutcomeKind::RequestTooLarge);

    for _ in 0..2 {
        assert_eq!(
            send(
                &client,
                request(
                    &url,
                    "/v1/chat/completions",
                    "sk-small",
                    &chat("gpt-4o", "x", 10)
                )
            )
            .await
            .status,
            200
        );
    }
    let reply = send(
        &client,
        request(
            &url,
            "/v1/chat/completions",
            "sk-small",
            &chat("gpt-4o", "x", 10),
        ),
    )
    .await;
    assert_eq!(reply.status, 429);
    let error = &reply.json()["error"];
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("requests"), Some("rate_limit_exceeded"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("Rate limit reached for gpt-4o in organization org-sim on requests per min (RPM): Limit 2, Used 2, Requested 1. Please try again in "), "{message}");
    let wait_ms: u64 = reply.header("retry-after-ms").parse().unwrap();
    assert!((29_000..=30_000).contains(&wait_ms), "{wait_ms}");
    assert_eq!(reply.header("retry-after"), "30");
    let outcome = classify(&reply);
    assert_eq!(
        outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::Requests)
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_millis(wait_ms)));

    let reply = send(
        &client,
        request(
            &url,
            "/v1/chat/completions",
            "sk-small",
            &json!({"model": "gpt-4o"}),
        ),
    )
    .await;
    assert_eq!(
        (
            reply.status.as_u16(),
            reply.json()["error"]["type"].as_str()
        ),
        (400, Some("invalid_request_error"))
    );
    let reply = send(
        &client,
        request(&url, "/v1/nothing", "sk-small", &json!({})),
    )
    .await;
    assert_eq!(reply.status, 404);

    let stats = sim.stats();
    assert_eq!(stats.rejected(Rejection::Unauthorized), 2);
    assert_eq!(stats.rejected(Rejection::QuotaExhausted), 1);
    assert_eq!(stats.rejected(Rejection::TooLarge), 1);
    assert_eq!(stats.rejected(Rejection::RateLimited), 1);
    assert_eq!(stats.rejected(Rejection::BadRequest), 1);
    assert_eq!(stats.rejected(Rejection::NotFound), 1);
    assert_eq!((stats.received, stats.accepted), (9, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn over_capacity_is_overloaded_and_h2c_works() {
    let sim = Sim::start(config(
        r#"
        [latency]
        time_to_first_token = "300ms"
        [faults]
        capacity = 1
        overload_status = 529
    "#,
    ))
    .await
    .unwrap();
    let client = h2c_client();
    let url = sim.url();
    let slow = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move {
            send(
                &client,
                request(&url, "/v1/messages", "sk", &chat("claude", "x", 5)),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = send(
        &client,
        request(&url, "/v1/messages", "sk", &chat("claude", "x", 5)),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 529);
    assert_eq!(
        reply.json()["error"],
        json!({"type": "overloaded_error", "message": "Overloaded"})
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::Overloaded);
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the request in flight was served"
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.rejected(Rejection::Overloaded), stats.max_in_flight),
        (1, 1)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn hangs_and_broken_streams() {
    let sim = Sim::start(config("[faults]\nhang_rate = 1.0"))
        .await
        .unwrap();
    let hanging = client();
    let pending = tokio::time::timeout(
        Duration::from_millis(200),
        send(
            &hanging,
            request(&sim.url(), "/v1/chat/completions", "sk", &chat("m", "x", 5)),
        ),
    );
    assert!(
        pending.await.is_err(),
        "no answer until the client gives up"
    );
    assert_eq!(sim.stats().hung, 1);
    sim.shutdown().await;

    let sim = Sim::start(config(
        "[faults]\nstream_disconnect_rate = 1.0\n[output]\nmin_tokens = 20\nmax_tokens = 20",
    ))
    .await
    .unwrap();
    let mut body = chat("m", "x", 50);
    body["stream"] = json!(true);
    let response = client()
        .request(request(&sim.url(), "/v1/chat/completions", "sk", &body))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    use http_body_util::BodyExt as _;
    assert!(
        response.into_body().collect().await.is_err(),
        "the stream breaks off"
    );
    assert_eq!(sim.stats().streams_disconnected, 1);
    sim.shutdown().await;

    let sim = Sim::start(config(
        "[faults]\nstream_error_rate = 1.0\n[output]\nmin_tokens = 20\nmax_tokens = 20",
    ))
    .await
    .unwrap();
    let mut body = chat("claude", "x", 50);
    body["stream"] = json!(true);
    let reply = send(&client(), request(&sim.url(), "/v1/messages", "sk", &body)).await;
    let (name, data) = reply.events().pop().unwrap();
    assert_eq!(name, "error");
    assert_eq!(
        data,
        r#"{"error":{"message":"Overloaded","type":"overloaded_error"},"type":"error"}"#
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn stats_and_reset_endpoints() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = client();
    send(
        &client,
        request(&sim.url(), "/v1/chat/completions", "sk", &chat("m", "x", 5)),
    )
    .await;
    let stats = send(
        &client,
        http::Request::get(format!("{}/sim/stats", sim.url()))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    let json = stats.json();
    assert_eq!(
        (json["received"].as_u64(), json["accepted"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["keys"].as_object().unwrap().len(), 1);
    assert!(
        !String::from_utf8_lossy(&stats.body).contains("\"sk\""),
        "keys appear by id, never by secret"
    );
    let reset = send(
        &client,
        http::Request::post(format!("{}/sim/reset", sim.url()))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reset.status, 200);
    assert_eq!(sim.stats().received, 0);
    sim.shutdown().await;
}
