//! Against tollgate-sim: 10,000 single-input embedding requests from 500 concurrent callers,
//! max batch 256, max wait 10 ms → at most 50 upstream calls, every caller gets the vector the
//! simulator returns for its input alone, and the median added latency is at most max wait.
//! In-process simulator, paused time.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::time::Instant;
use tollgate_batch::{BatchConfig, BatchLayer, EmbeddingsCodec};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_sim::{SimConfig, SimService};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

const CALLERS: usize = 500;
const PER_CALLER: usize = 20;
const MAX_WAIT: Duration = Duration::from_millis(10);

fn new_sim() -> SimService {
    SimService::new(
        SimConfig::from_toml(
            r#"
            seed = 5
            [latency]
            time_to_first_token = "40ms"
            per_output_token = "0ms"
            [output]
            embedding_dimensions = 8
        "#,
        )
        .unwrap(),
    )
    .unwrap()
}

fn embed(input: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": "text-embedding-3-small", "input": input}).to_string();
    Request::post("https://api.openai.com/v1/embeddings")
        .header("authorization", "Bearer sk-batch")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Sends one request; returns the embedding and how long it took.
async fn embedding<S, B>(service: S, input: &str) -> (Value, Duration)
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let sent = Instant::now();
    let response = service.oneshot(embed(input)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "one vector per caller");
    (data[0]["embedding"].clone(), sent.elapsed())
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_in_at_most_fifty_calls() {
    let sim = new_sim();
    let batch = BatchLayer::with_config(
        EmbeddingsCodec,
        BatchConfig {
            max_batch_size: 256,
            max_wait: MAX_WAIT,
            ..BatchConfig::default()
        },
    );
    let stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(batch)
            .service(sim.clone()),
    );
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(PER_CALLER);
                for n in 0..PER_CALLER {
                    let input = format!("document {caller} part {n}");
                    let (vector, took) = embedding(stack.clone(), &input).await;
                    seen.push((input, vector, took));
                }
                seen
            })
        })
        .collect();
    let mut results = Vec::with_capacity(CALLERS * PER_CALLER);
    for caller in callers {
        results.extend(caller.await.unwrap());
    }
    let upstream = sim.log();

    // The same inputs, one request each, to a fresh simulator with the same seed.
    let alone = new_sim();
    let mut latencies = Vec::with_capacity(results.len());
    let (_, single) = embedding(alone.clone(), "warm-up").await;
    for (input, vector, took) in &results {
        let (expected, _) = embedding(alone.clone(), input).await;
        assert_eq!(vector, &expected, "the vector of {input:?}");
        latencies.push(took.saturating_sub(single));
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "{} requests from {CALLERS} callers in {} upstream calls ({:.1} % saved); added latency \
         p50 {p50:?}, p99 {p99:?} (one call alone takes {single:?})",
        results.len(),
        upstream.len(),
        100.0 - upstream.len() as f64 / results.len() as f64 * 100.0,
    );
    assert_eq!(results.len(), 10_000);
    assert!(upstream.len() <= 50, "{} upstream calls", upstream.len());
    assert!(p50 <= MAX_WAIT, "p50 added latency {p50:?}");
}

fn gemini_embed(input: &str) -> Request<Full<Bytes>> {
    let body = json!({"content": {"parts": [{"text": input}]}, "taskType": "RETRIEVAL_DOCUMENT"});
    Request::post(
        "https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004:embedContent",
    )
    .header("x-goog-api-key", "AIza-batch")
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(body.to_string())))
    .unwrap()
}

async fn gemini_vector<S, B>(service: S, input: &str) -> Value
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service.oneshot(gemini_embed(input)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    body["embedding"]["values"].clone()
}

#[tokio::test(start_paused = true)]
async fn gemini_embed_content_calls_become_batch_embed_contents() {
    let sim = new_sim();
    let stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(BatchLayer::new(tollgate_batch::GeminiEmbeddingsCodec))
            .service(sim.clone()),
    );
    let callers: Vec<_> = (0..250)
        .map(|i| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let input = format!("passage {i}");
                let vector = gemini_vector(stack, &input).await;
                (input, vector)
            })
        })
        .collect();
    let alone = new_sim();
    for caller in callers {
        let (input, vector) = caller.await.unwrap();
        assert!(vector.as_array().is_some_and(|v| !v.is_empty()));
        assert_eq!(
            vector,
            gemini_vector(alone.clone(), &input).await,
            "{input}"
        );
    }
    let log = sim.log();
    assert_eq!(log.len(), 3, "100 + 100 + 50");
    assert!(
        log.iter().all(|e| e.route.ends_with(":batchEmbedContents")),
        "{log:?}"
    );
}
