//! With the `metrics` feature the limiter records, per provider and model, how long requests
//! waited, why it refused some, when a provider's 429 paused the scope, and the tokens reserved
//! and used.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_ratelimit::{MaxWait, Quotas, RateLimitLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_ratelimit_"])
}

const SECRET: &str = "sk-ratelimit-metrics-secret";

fn chat(max_tokens: u32) -> Request<Full<Bytes>> {
    // 6 input tokens estimated.
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Hello!"}}]}}"#
    );
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", format!("Bearer {SECRET}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn waits_refusals_pauses_and_tokens_per_scope() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // The first answer is a success that used 6 + 20 tokens, the next a 429.
    let limited = Arc::new(Mutex::new(false));
    let answers = limited.clone();
    let provider = service_fn(move |_: Request<Full<Bytes>>| {
        let limited = *answers.lock().unwrap();
        async move {
            let response = if limited {
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", "2")
                    .body(Full::new(Bytes::new()))
            } else {
                Response::builder().body(Full::new(Bytes::from(
                    r#"{"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":20,"total_tokens":26}}"#,
                )))
            };
            Ok::<_, Infallible>(response.unwrap())
        }
    });
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(RateLimitLayer::new(Quotas::per_minute(1, 1_000)))
        .layer(ClassifyLayer::new())
        .service(provider);

    // 6 + 5000 tokens never fit 1000 a minute.
    assert!(service.clone().oneshot(chat(5_000)).await.is_err());
    // Admitted at once: 6 + 100 tokens reserved, 6 + 20 used.
    let response = service.clone().oneshot(chat(100)).await.unwrap();
    response.into_body().collect().await.unwrap();
    // Its turn is a minute away, past its max wait.
    let mut impatient = chat(100);
    impatient
        .extensions_mut()
        .insert(MaxWait(Duration::from_secs(1)));
    assert!(service.clone().oneshot(impatient).await.is_err());
    // Waits its minute, then meets a 429 that pauses the scope.
    *limited.lock().unwrap() = true;
    let response = service.clone().oneshot(chat(10)).await.unwrap();
    assert_eq!(response.status(), 429);

    let recorded = recorded(&snapshotter);
    let scope = "model=gpt-4o-mini,provider=openai";
    let key = |name: &str, extra: &str| match extra {
        "" => format!("{name}{{{scope}}}"),
        _ if extra.starts_with("dimension") => format!("{name}{{{extra},{scope}}}"),
        _ => format!("{name}{{{scope},{extra}}}"),
    };
    let expected: BTreeMap<String, String> = [
        (
            key("tollgate_ratelimit_wait_seconds", ""),
            "histogram [0.0, 60.0]",
        ),
        (
            key("tollgate_ratelimit_refused_total", "reason=wait"),
            "counter 1",
        ),
        (
            key("tollgate_ratelimit_refused_total", "reason=exceeds_limit"),
            "counter 1",
        ),
        (key("tollgate_ratelimit_pauses_total", ""), "counter 1"),
        // The configured quotas, a minute, set with the first answer.
        (
            "tollgate_ratelimit_quota_per_minute{dimension=requests,model=gpt-4o-mini,\
             provider=openai,source=configured}"
                .to_owned(),
            "gauge 1",
        ),
        (
            "tollgate_ratelimit_quota_per_minute{dimension=tokens,model=gpt-4o-mini,\
             provider=openai,source=configured}"
                .to_owned(),
            "gauge 1000",
        ),
        (
            key(
                "tollgate_ratelimit_tokens_reserved_total",
                "dimension=tokens",
            ),
            "counter 122",
        ),
        (
            key(
                "tollgate_ratelimit_tokens_reserved_total",
                "dimension=input_tokens",
            ),
            "counter 12",
        ),
        (
            key(
                "tollgate_ratelimit_tokens_reserved_total",
                "dimension=output_tokens",
            ),
            "counter 110",
        ),
        (
            key("tollgate_ratelimit_tokens_used_total", "dimension=tokens"),
            "counter 26",
        ),
        (
            key(
                "tollgate_ratelimit_tokens_used_total",
                "dimension=input_tokens",
            ),
            "counter 6",
        ),
        (
            key(
                "tollgate_ratelimit_tokens_used_total",
                "dimension=output_tokens",
            ),
            "counter 20",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(recorded, expected);
    tollgate_testkit::metrics::assert_no_credential(&recorded, SECRET);
}

#[tokio::test(start_paused = true)]
async fn a_limit_learned_from_refusals_is_a_gauge_with_its_source() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // An upstream with no rate-limit headers: ten answers, then a 429 that asks for 30 s.
    let calls = Arc::new(Mutex::new(0u32));
    let counted = calls.clone();
    let provider = service_fn(move |_: Request<Full<Bytes>>| {
        let n = {
            let mut calls = counted.lock().unwrap();
            *calls += 1;
            *calls
        };
        async move {
            let response = if n > 10 {
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .body(Full::new(Bytes::from(
                        r#"{"error":{"type":"requests","message":"Rate limit reached. Please try again in 30s."}}"#,
                    )))
            } else {
                Response::builder().body(Full::new(Bytes::from(
                    r#"{"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":4,"total_tokens":10}}"#,
                )))
            };
            Ok::<_, Infallible>(response.unwrap())
        }
    });
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(RateLimitLayer::new(Quotas::unlimited()))
        .layer(ClassifyLayer::new())
        .service(provider);
    for _ in 0..10 {
        let response = service.clone().oneshot(chat(10)).await.unwrap();
        response.into_body().collect().await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
    }
    let response = service.clone().oneshot(chat(10)).await.unwrap();
    assert_eq!(response.status(), 429);

    let recorded = recorded(&snapshotter);
    let gauge = recorded
        .get(
            "tollgate_ratelimit_quota_per_minute{dimension=requests,model=gpt-4o-mini,\
             provider=openai,source=refusals}",
        )
        .unwrap_or_else(|| panic!("{recorded:#?}"));
    // Ten answers in the minute before the refusal, less 2 %.
    let per_minute: f64 = gauge.trim_start_matches("gauge ").parse().unwrap();
    assert!((9.5..10.0).contains(&per_minute), "{per_minute}");
    tollgate_testkit::metrics::assert_no_credential(&recorded, SECRET);
}
