//! The Gemini mode: `generateContent` (JSON, SSE and the streamed JSON array), `embedContent`
//! and `batchEmbedContents`, `x-goog-api-key` and `?key=` auth, every refusal in Gemini's
//! google.rpc shape, and how tollgate-core reads them.

mod common;

use std::time::{Duration, SystemTime};

use common::{Reply, call, client, post, send};
use serde_json::{Value, json};
use tollgate_core::classify::{classify_response, classify_stream_error};
use tollgate_core::{OutcomeKind, Provider, RateLimitDimension, RateLimitSnapshot};
use tollgate_sim::{Rejection, Sim, SimConfig, SimService};

const GENERATE: &str = "/v1beta/models/gemini-2.0-flash:generateContent";

fn config(toml: &str) -> SimConfig {
    SimConfig::from_toml(toml).expect("a valid scenario")
}

fn sim(toml: &str) -> SimService {
    SimService::new(config(toml)).expect("a valid config")
}

fn classify(reply: &Reply) -> tollgate_core::Outcome {
    classify_response(reply.status, &reply.headers, &reply.body, SystemTime::now())
}

fn ask(text: &str, max_output_tokens: Option<u64>) -> Value {
    let mut body = json!({"contents": [{"role": "user", "parts": [{"text": text}]}]});
    if let Some(max) = max_output_tokens {
        body["generationConfig"] = json!({"maxOutputTokens": max});
    }
    body
}

async fn generate(sim: &SimService, key: &str, body: &Value) -> Reply {
    call(
        sim,
        post("http://sim", GENERATE, &[("x-goog-api-key", key)], body),
    )
    .await
}

/// No header of any provider's rate-limit family, and no wait header.
fn assert_no_limit_headers(reply: &Reply) {
    let names: Vec<&str> = reply.headers.keys().map(|n| n.as_str()).collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("ratelimit") && !n.starts_with("retry-after")),
        "{names:?}"
    );
}

fn text_of(response: &Value) -> &str {
    response["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn generate_content_as_json() {
    let sim = Sim::start(config(
        "[[keys]]\nkey = \"AIza-test\"\n[output]\nmin_tokens = 5\nmax_tokens = 5\n",
    ))
    .await
    .unwrap();
    let client = client();
    let reply = send(
        &client,
        post(
            &sim.url(),
            GENERATE,
            &[("x-goog-api-key", "AIza-test")],
            &ask("Hello!", None),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        "application/json; charset=UTF-8"
    );
    assert_no_limit_headers(&reply);
    let body = reply.json();
    let text = text_of(&body).to_owned();
    assert_eq!(text.split(' ').count(), 5);
    assert_eq!(
        body,
        json!({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 5, "totalTokenCount": 7},
            "modelVersion": "gemini-2.0-flash",
            "responseId": body["responseId"],
        })
    );
    assert!(body["responseId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(classify(&reply).kind, OutcomeKind::Success);
    let snapshot =
        RateLimitSnapshot::from_headers(&reply.headers, Some(Provider::Gemini), SystemTime::now());
    assert!(snapshot.is_empty(), "{snapshot:?}");

    // The key in the query string, a cap that cuts the answer, and the `/v1/` prefix.
    let path = "/v1/models/gemini-2.0-flash:generateContent?key=AIza-test";
    let reply = send(
        &client,
        post(&sim.url(), path, &[], &ask("Hello!", Some(3))),
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 3);
    let log = sim.log();
    assert_eq!(log[1].model.as_deref(), Some("gemini-2.0-flash"));
    assert!(
        !format!("{log:?}").contains("AIza-test"),
        "the query key is never logged"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_generate_content_as_sse_and_as_a_json_array() {
    let sim = Sim::start(config("[output]\nmin_tokens = 3\nmax_tokens = 3\n"))
        .await
        .unwrap();
    let client = client();
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
    let reply = send(
        &client,
        post(
            &sim.url(),
            path,
            &[("x-goog-api-key", "k")],
            &ask("Hello!", None),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/event-stream");
    assert_no_limit_headers(&reply);
    let raw = std::str::from_utf8(&reply.body).unwrap();
    assert!(
        raw.starts_with("data: {") && raw.ends_with("}\r\n\r\n"),
        "{raw:?}"
    );
    let chunks: Vec<Value> = reply
        .events()
        .iter()
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3, "one chunk per token");
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(
            chunk["usageMetadata"],
            json!({"promptTokenCount": 2, "candidatesTokenCount": i + 1, "totalTokenCount": 3 + i}),
            "cumulative usage"
        );
        assert_eq!(chunk["candidates"][0]["content"]["role"], "model");
        assert_eq!(chunk["modelVersion"], "gemini-2.0-flash");
    }
    assert!(
        chunks[..2]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none())
    );
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    let text: String = chunks.iter().map(|c| text_of(c).to_owned()).collect();
    assert_eq!(text.split(' ').count(), 3);

    // Without alt=sse, Gemini streams one JSON array.
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let reply = send(
        &client,
        post(
            &sim.url(),
            path,
            &[("x-goog-api-key", "k")],
            &ask("Hello!", None),
        ),
    )
    .await;
    assert_eq!(
        reply.header("content-type"),
        "application/json; charset=UTF-8"
    );
    let array = reply.json();
    let array = array.as_array().unwrap();
    assert_eq!(array.len(), 3);
    assert_eq!(array[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(array[2]["usageMetadata"]["totalTokenCount"], 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn embed_content_and_batches_of_at_most_a_hundred() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = client();
    let url = sim.url();
    let embed = "/v1beta/models/text-embedding-004:embedContent";
    let batch = "/v1beta/models/text-embedding-004:batchEmbedContents";
    let key = [("x-goog-api-key", "k")];
    let one = |text: &str| {
        json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": text}]},
            "outputDimensionality": 8})
    };
    let reply = send(&client, post(&url, embed, &key, &one("alpha"))).await;
    assert_eq!(reply.status, 200);
    let alpha = reply.json()["embedding"]["values"].clone();
    assert_eq!(alpha.as_array().unwrap().len(), 8);
    assert_eq!(
        reply.json().as_object().unwrap().len(),
        1,
        "only `embedding`"
    );

    let body = json!({"requests": [one("alpha"), one("beta"), one("alpha")]});
    let reply = send(&client, post(&url, batch, &key, &body)).await;
    assert_eq!(reply.status, 200);
    let embeddings = reply.json()["embeddings"].as_array().unwrap().clone();
    assert_eq!(embeddings.len(), 3);
    assert_eq!(
        embeddings[0]["values"], alpha,
        "the same vector for the same text"
    );
    assert_eq!(embeddings[2]["values"], alpha);
    assert_ne!(embeddings[1]["values"], alpha);

    let hundred = json!({"requests": vec![one("x"); 100]});
    assert_eq!(
        send(&client, post(&url, batch, &key, &hundred))
            .await
            .status,
        200
    );
    let too_many = json!({"requests": vec![one("x"); 101]});
    let reply = send(&client, post(&url, batch, &key, &too_many)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"}})
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::ClientError);
    sim.shutdown().await;
}

fn quota_failure(reply: &Reply) -> (String, String, Option<String>) {
    let body = reply.json();
    let details = body["error"]["details"].as_array().unwrap().clone();
    let violation = &details[0]["violations"][0];
    assert_eq!(
        details[0]["@type"],
        "type.googleapis.com/google.rpc.QuotaFailure"
    );
    let delay = details.get(1).map(|d| {
        assert_eq!(d["@type"], "type.googleapis.com/google.rpc.RetryInfo");
        d["retryDelay"].as_str().unwrap().to_owned()
    });
    (
        violation["quotaMetric"].as_str().unwrap().to_owned(),
        violation["quotaId"].as_str().unwrap().to_owned(),
        delay,
    )
}

#[tokio::test(start_paused = true)]
async fn requests_per_minute_wait_exactly_as_retry_info_says() {
    let sim = sim("[[keys]]\nkey = \"AIza-rpm\"\nrequests_per_minute = 15\n");
    for _ in 0..15 {
        assert_eq!(
            generate(&sim, "AIza-rpm", &ask("x", Some(5))).await.status,
            200
        );
    }
    let reply = generate(&sim, "AIza-rpm", &ask("x", Some(5))).await;
    assert_eq!(reply.status, 429);
    assert_no_limit_headers(&reply);
    let body = reply.json();
    assert_eq!(
        (
            body["error"]["code"].as_u64(),
            body["error"]["status"].as_str()
        ),
        (Some(429), Some("RESOURCE_EXHAUSTED"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "You exceeded your current quota, please check your plan and billing details."
        ),
        "{message}"
    );
    assert!(
        message.contains("limit: 15, model: gemini-2.0-flash"),
        "{message}"
    );
    assert_eq!(
        quota_failure(&reply),
        (
            "generativelanguage.googleapis.com/generate_content_free_tier_requests".to_owned(),
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier".to_owned(),
            Some("4s".to_owned())
        ),
        "one request of 15 a minute comes back every 4 s"
    );
    let outcome = classify(&reply);
    assert_eq!(
        outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::Requests)
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(4)));

    tokio::time::sleep(Duration::from_millis(3_999)).await;
    assert_eq!(
        generate(&sim, "AIza-rpm", &ask("x", Some(5))).await.status,
        429
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        generate(&sim, "AIza-rpm", &ask("x", Some(5))).await.status,
        200,
        "admitted after exactly the wait"
    );
}

#[tokio::test(start_paused = true)]
async fn input_tokens_per_minute_and_requests_per_day() {
    let sim = sim(r#"
        [[keys]]
        key = "AIza-tpm"
        input_tokens_per_minute = 60
        [[keys]]
        key = "AIza-rpd"
        requests_per_day = 2
        [[keys]]
        key = "AIza-spent"
        quota_exhausted = true
    "#);
    // 30 one-letter words: 30 prompt tokens; the minute holds two such prompts.
    let prompt = vec!["a"; 30].join(" ");
    for _ in 0..2 {
        assert_eq!(
            generate(&sim, "AIza-tpm", &ask(&prompt, Some(5)))
                .await
                .status,
            200
        );
    }
    let reply = generate(&sim, "AIza-tpm", &ask(&prompt, Some(5))).await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        quota_failure(&reply),
        (
            "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
                .to_owned(),
            "GenerateContentInputTokensPerModelPerMinute-FreeTier".to_owned(),
            Some("30s".to_owned())
        )
    );
    let outcome = classify(&reply);
    assert_eq!(
        outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::InputTokens)
    );
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        generate(&sim, "AIza-tpm", &ask(&prompt, Some(5)))
            .await
            .status,
        200
    );

    // A prompt bigger than the whole minute: the same quota, but no RetryInfo (no wait helps).
    let huge = vec!["a"; 61].join(" ");
    let reply = generate(&sim, "AIza-tpm", &ask(&huge, Some(5))).await;
    assert_eq!(reply.status, 429);
    assert_eq!(quota_failure(&reply).2, None);

    for _ in 0..2 {
        assert_eq!(
            generate(&sim, "AIza-rpd", &ask("x", None)).await.status,
            200
        );
    }
    let reply = generate(&sim, "AIza-rpd", &ask("x", None)).await;
    assert_eq!(reply.status, 429);
    let (metric, quota_id, delay) = quota_failure(&reply);
    assert_eq!(
        (metric.as_str(), quota_id.as_str()),
        (
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
        )
    );
    assert_eq!(delay.as_deref(), Some("43200s"), "one of two a day: 12 h");
    assert_eq!(classify(&reply).kind, OutcomeKind::QuotaExhausted);

    let reply = generate(&sim, "AIza-spent", &ask("x", None)).await;
    assert_eq!(reply.status, 429);
    let (_, quota_id, delay) = quota_failure(&reply);
    assert_eq!(
        (quota_id.as_str(), delay),
        ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", None)
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::QuotaExhausted);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.rejected(Rejection::RateLimited),
            stats.rejected(Rejection::TooLarge),
            stats.rejected(Rejection::QuotaExhausted)
        ),
        (2, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn keys_that_are_unknown_revoked_or_missing() {
    let sim = sim(r#"
        [[keys]]
        key = "AIza-good"
        [[keys]]
        key = "AIza-old"
        revoked_after = "10s"
    "#);
    let api_key_invalid = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
        "message": "API key not valid. Please pass a valid API key.",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com",
             "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
             "message": "API key not valid. Please pass a valid API key."}]}});
    let reply = generate(&sim, "AIza-unknown", &ask("x", None)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json(), api_key_invalid);
    assert!(!String::from_utf8_lossy(&reply.body).contains("AIza-unknown"));

    let by_query = format!("{GENERATE}?key=AIza-old");
    let old = || call(&sim, post("http://sim", &by_query, &[], &ask("x", None)));
    assert_eq!(old().await.status, 200);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reply = old().await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()),
        (400, api_key_invalid)
    );

    let reply = call(&sim, post("http://sim", GENERATE, &[], &ask("x", None))).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(classify(&reply).kind, OutcomeKind::AuthError);
    assert_eq!(sim.stats().rejected(Rejection::Unauthorized), 3);
}

#[tokio::test(start_paused = true)]
async fn bad_requests_unknown_methods_and_server_errors() {
    let sim = sim("[[keys]]\nkey = \"k\"\n");
    let reply = generate(&sim, "k", &json!({"contents": []})).await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()),
        (
            400,
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                "message": "* GenerateContentRequest.contents: contents is not specified\n"}})
        )
    );
    let path = "/v1beta/models/gemini-2.0-flash:countTokens";
    let reply = call(
        &sim,
        post("http://sim", path, &[("x-goog-api-key", "k")], &json!({})),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["status"], "NOT_FOUND");
    assert_eq!(reply.json()["error"]["code"], 404);

    // A cap no minute can hold: refused, never an overflow.
    let reply = generate(&sim, "k", &ask("x", Some(u64::MAX))).await;
    assert_eq!(reply.status, 429);
    assert_eq!(quota_failure(&reply).2, None, "no wait helps");

    let sim = self::sim("[faults]\nerror_rate = 1.0\n");
    let reply = generate(&sim, "k", &ask("x", None)).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["status"], "INTERNAL");
    assert_eq!(classify(&reply).kind, OutcomeKind::ServerError);
}

#[tokio::test(start_paused = true)]
async fn overload_is_a_503_whatever_the_scenario_says() {
    let sim = sim(
        "[latency]\ntime_to_first_token = \"1s\"\n[faults]\ncapacity = 1\noverload_status = 529\n",
    );
    let slow = tokio::spawn({
        let sim = sim.clone();
        async move { generate(&sim, "k", &ask("x", None)).await.status }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = generate(&sim, "k", &ask("x", None)).await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.json(),
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE"}})
    );
    assert_eq!(classify(&reply).kind, OutcomeKind::Overloaded);
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn broken_streams_end_with_an_error_event_or_drop() {
    let sim =
        sim("[faults]\nstream_error_rate = 1.0\n[output]\nmin_tokens = 10\nmax_tokens = 10\n");
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
    let reply = call(
        &sim,
        post(
            "http://sim",
            path,
            &[("x-goog-api-key", "k")],
            &ask("x", None),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let (_, last) = events.last().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(last).unwrap(),
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE"}})
    );
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|(_, d)| !d.contains("finishReason")),
        "no chunk finished"
    );
    assert_eq!(
        classify_stream_error(last.as_bytes()).kind,
        OutcomeKind::Overloaded
    );
    let array_path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let reply = call(
        &sim,
        post(
            "http://sim",
            array_path,
            &[("x-goog-api-key", "k")],
            &ask("x", None),
        ),
    )
    .await;
    let array = reply.json();
    let last = array.as_array().unwrap().last().unwrap();
    assert_eq!(
        last["error"]["status"], "UNAVAILABLE",
        "a valid array to the end"
    );

    let sim = self::sim("[faults]\nstream_disconnect_rate = 1.0\n");
    let response = tower::ServiceExt::oneshot(
        sim.clone(),
        post(
            "http://sim",
            path,
            &[("x-goog-api-key", "k")],
            &ask("x", None),
        ),
    )
    .await
    .unwrap();
    use http_body_util::BodyExt as _;
    assert!(response.into_body().collect().await.is_err(), "dropped");
    assert_eq!(sim.stats().streams_disconnected, 1);
}
