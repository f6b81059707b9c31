//! The cost of parse-once and classify-once on a typical 2 KB chat call.
//!
//! `cargo bench -p tollgate-core --bench annotate_classify` (add `--features tiktoken` for the
//! exact-tokenizer comparison). Every future here is ready at once, so it is polled a single
//! time with a no-op waker: what is measured is the layers' own work, not an executor's.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use tollgate_core::annotate::{AnnotateLayer, annotate};
use tollgate_core::classify::{ClassifyLayer, classify_response};
use tollgate_core::estimate::HeuristicEstimator;
use tollgate_core::{Provider, RateLimitSnapshot};
use tollgate_testkit::{roundtrip_drained, runtime};
use tower::{Layer, service_fn};

fn chat_request_body() -> Bytes {
    let system = "You are a careful assistant that extracts structured data from invoices. \
        Answer with JSON only, using the keys vendor, date, total, currency and line_items. \
        If a field is missing, use null. Never invent values.";
    let invoice = "ACME Corp. Invoice #10442, issued 2025-08-21. Bill to: Globex, 12 Main St. \
        Items: 3 x Widget A at 19.99 USD; 1 x Service plan (12 months) at 240.00 USD; \
        2 x Cable kit at 7.50 USD. Subtotal 314.97 USD, tax 8% 25.20 USD, total 340.17 USD. \
        Payment due within 30 days by bank transfer to account 0012-4456-7789. ";
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "max_tokens": 512,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": invoice.repeat(5)},
            {"role": "assistant", "content": "{\"vendor\":\"ACME Corp.\",\"date\":\"2025-08-21\"}"},
            {"role": "user", "content": "Now include the line items and the total."},
        ],
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        (1800..2600).contains(&bytes.len()),
        "about 2 KB: {}",
        bytes.len()
    );
    Bytes::from(bytes)
}

fn chat_response_body() -> Bytes {
    let content = "{\"vendor\":\"ACME Corp.\",\"date\":\"2025-08-21\",\"total\":340.17,\"currency\":\"USD\",\
        \"line_items\":[{\"description\":\"Widget A\",\"quantity\":3,\"unit_price\":19.99},\
        {\"description\":\"Service plan (12 months)\",\"quantity\":1,\"unit_price\":240.0},\
        {\"description\":\"Cable kit\",\"quantity\":2,\"unit_price\":7.5}]}";
    let body = serde_json::json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1_741_569_952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.repeat(4),
            "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 431, "completion_tokens": 402, "total_tokens": 833,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn openai_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("date", "Thu, 21 Aug 2025 12:40:58 GMT"),
        ("openai-processing-ms", "1187"),
        ("x-request-id", "req_5d1ba5b7c2f1a3e0c8c9f3f6e2b9c4a1"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "29999167"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "1ms"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    headers
}

fn bench(c: &mut Criterion) {
    let request_body = chat_request_body();
    let response_body = chat_response_body();
    let headers = openai_headers();
    let (parts, ()) = Request::post("https://api.openai.com/v1/chat/completions")
        .header(
            "authorization",
            "Bearer sk-proj-0123456789abcdefghijklmnopqrstuvwxyz",
        )
        .header("content-type", "application/json")
        .body(())
        .unwrap()
        .into_parts();
    let now = SystemTime::now();

    let mut group = c.benchmark_group("core");
    group.bench_function("annotate_fn_2kb_chat", |b| {
        b.iter(|| {
            annotate(
                black_box(&parts),
                black_box(&request_body),
                None,
                &HeuristicEstimator,
            )
        })
    });
    group.bench_function("classify_response_200", |b| {
        b.iter(|| classify_response(StatusCode::OK, black_box(&headers), &[], now))
    });
    group.bench_function("rate_limit_snapshot", |b| {
        b.iter(|| RateLimitSnapshot::from_headers(black_box(&headers), Some(Provider::OpenAi), now))
    });
    let error_body = br#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min (TPM): Limit 50000, Used 47949, Requested 3006. Please try again in 1.146s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
    group.bench_function("classify_response_429", |b| {
        b.iter(|| {
            classify_response(
                StatusCode::TOO_MANY_REQUESTS,
                black_box(&headers),
                error_body,
                now,
            )
        })
    });

    // The same call through a bare service, then through Annotate + Classify, body drained.
    let make_response = {
        let headers = headers.clone();
        let body = response_body.clone();
        move || {
            let mut response = Response::new(Full::new(body.clone()));
            *response.headers_mut() = headers.clone();
            response
        }
    };
    let make_request = {
        let body = request_body.clone();
        move || {
            Request::post("https://api.openai.com/v1/chat/completions")
                .header(
                    "authorization",
                    "Bearer sk-proj-0123456789abcdefghijklmnopqrstuvwxyz",
                )
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap()
        }
    };
    let respond = {
        let make_response = make_response.clone();
        move |_: Request<Full<Bytes>>| {
            let response = make_response();
            async move { Ok::<_, Infallible>(response) }
        }
    };

    let mut bare = service_fn(respond.clone());
    group.bench_function("bare_service_2kb_roundtrip", |b| {
        b.iter(|| roundtrip_drained(&mut bare, make_request()))
    });

    let mut stack = AnnotateLayer::new().layer(ClassifyLayer::new().layer(service_fn(respond)));
    let rt = runtime();
    let _guard = rt.enter();
    group.bench_function("annotate_classify_2kb_roundtrip", |b| {
        b.iter(|| roundtrip_drained(&mut stack, make_request()))
    });

    #[cfg(feature = "tiktoken")]
    {
        let tiktoken = tollgate_core::estimate::TiktokenEstimator::o200k_base().unwrap();
        group.bench_function("annotate_fn_2kb_chat_tiktoken", |b| {
            b.iter(|| annotate(black_box(&parts), black_box(&request_body), None, &tiktoken))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
