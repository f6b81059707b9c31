//! With the `metrics` feature the batcher counts, per provider and model, the members it
//! flushed and the upstream calls it made (the difference is the calls saved), and the size of
//! each flush.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use tollgate_batch::{BatchConfig, BatchLayer, EmbeddingsCodec};
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
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
