//! With the `metrics` feature the batcher counts, per provider and model, the members it
//! flushed and the upstream calls it made (the difference is the calls saved), and the size of
//! each flush.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use tollgate_batch::deferred::{DeferredConfig, DeferredQueue, JobOptions, transport};
use tollgate_batch::{BatchConfig, BatchLayer, EmbeddingsCodec};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::{BoxError, Clock};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_batch_"])
}

const SECRET: &str = "sk-batch-metrics-secret";

/// An embeddings upstream: one `[length]` vector per input.
async fn upstream(request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, BoxError> {
    let body: Value = serde_json::from_slice(&request.into_body().collect().await?.to_bytes())?;
    let inputs = match &body["input"] {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let length = input.as_str().unwrap_or_default().len();
            json!({"object": "embedding", "index": index, "embedding": [length]})
        })
        .collect();
    let answer = json!({"object": "list", "data": data, "model": body["model"],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1}});
    Ok(Response::new(Full::new(Bytes::from(answer.to_string()))))
}

fn embed(model: &str, input: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": model, "input": input}).to_string();
    Request::post("https://api.openai.com/v1/embeddings")
        .header("authorization", format!("Bearer {SECRET}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn members_and_upstream_calls_per_flush() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let config = BatchConfig {
        max_batch_size: 4,
        max_wait: Duration::from_millis(10),
        ..BatchConfig::default()
    };
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(BatchLayer::with_config(EmbeddingsCodec, config))
        .service(service_fn(upstream));
    // Five of one model (a full flush of 4, then 1 alone after 10 ms), two of another.
    let requests = ["a", "bb", "ccc", "dddd", "eeeee"]
        .map(|input| embed("text-embedding-3-small", input))
        .into_iter()
        .chain(["x", "yy"].map(|input| embed("text-embedding-3-large", input)));
    let tasks: Vec<_> = requests
        .map(|request| tokio::spawn(stack.clone().oneshot(request)))
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }

    let recorded = recorded(&snapshotter);
    let small = "model=text-embedding-3-small,provider=openai";
    let large = "model=text-embedding-3-large,provider=openai";
    assert_eq!(
        recorded,
        BTreeMap::from([
            (
                format!("tollgate_batch_items_total{{{large}}}"),
                "counter 2".to_owned()
            ),
            (
                format!("tollgate_batch_items_total{{{small}}}"),
                "counter 5".to_owned()
            ),
            (
                format!("tollgate_batch_size{{{large}}}"),
                "histogram [2.0]".to_owned()
            ),
            (
                format!("tollgate_batch_size{{{small}}}"),
                "histogram [4.0, 1.0]".to_owned()
            ),
            (
                format!("tollgate_batch_upstream_calls_total{{{large}}}"),
                "counter 1".to_owned()
            ),
            (
                format!("tollgate_batch_upstream_calls_total{{{small}}}"),
                "counter 2".to_owned()
            ),
        ])
    );
    tollgate_testkit::metrics::assert_no_credential(&recorded, SECRET);
}

/// Wall-clock time that follows tokio's (paused) clock.
#[derive(Clone)]
struct PausedWall(tokio::time::Instant);

impl Clock for PausedWall {
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + self.0.elapsed()
    }
}

fn chat(n: usize) -> Request<Bytes> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("summarise document {n}")}]});
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_deferred_queue_reports_its_pending_jobs_after_each_round() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let sim = tollgate_sim::SimService::new(
        tollgate_sim::SimConfig::from_toml("[latency]\ntime_to_first_token = \"100ms\"\n").unwrap(),
    )
    .unwrap();
    let net = tower::ServiceBuilder::new()
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .service(sim);
    // Removed when dropped, after the queue (declared later, dropped first).
    let dir = tempfile::Builder::new()
        .prefix("tollgate-deferred-metrics-")
        .tempdir()
        .unwrap();
    let config = DeferredConfig {
        interval: Duration::from_secs(3600),
        ..DeferredConfig::default()
    };
    let queue = DeferredQueue::builder(dir.path().join("queue.redb"), transport(net))
        .config(config)
        .clock(PausedWall(tokio::time::Instant::now()))
        .open()
        .await
        .unwrap();
    // Three patient jobs and one that must go within 2 s: the round that sends it alone
    // leaves three pending.
    for n in 0..3 {
        queue.submit(chat(n)).await.unwrap();
    }
    let urgent = JobOptions {
        max_age: Some(Duration::from_secs(2)),
        ..JobOptions::default()
    };
    let urgent = queue.submit_with(chat(3), urgent).await.unwrap();
    queue.wait(urgent).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        recorded(&snapshotter),
        BTreeMap::from([(
            "tollgate_batch_deferred_pending{}".to_owned(),
            "gauge 3".to_owned()
        )])
    );
    queue.shutdown().await;
}
