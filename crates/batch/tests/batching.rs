//! The batcher under paused time: flush triggers (size, tokens, max wait), one upstream call per
//! flush, error fan-out, cancelled callers, mixed models, a bounded queue, requests that cannot
//! merge, and the size signal.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tollgate_batch::{
    Batch, BatchBody, BatchConfig, BatchFailed, BatchLayer, EmbeddingsCodec, QueueFull, WhenFull,
};
use tollgate_core::BoxError;
use tollgate_core::annotate::{Annotate, AnnotateLayer};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// What the upstream saw: each call's body, and when.
#[derive(Default)]
struct Upstream {
    calls: Mutex<Vec<(Duration, Value)>>,
    /// 0: answer; a status: answer every call with it; 1: fail the call.
    fail: AtomicU16,
    /// Calls wait for a permit here when set.
    gate: Mutex<Option<Arc<Semaphore>>>,
}

type Inner = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, BoxError>;
type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<BatchBody<Full<Bytes>>>, BoxError>;

/// An embeddings upstream: the vector of an input is `[its length, its first byte]`.
fn upstream(start: Instant) -> (Inner, Arc<Upstream>) {
    let seen = Arc::new(Upstream::default());
    let upstream = seen.clone();
    let service = service_fn(move |request: Request<Full<Bytes>>| {
        let upstream = upstream.clone();
        async move {
            let gate = upstream.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let body: Value =
                serde_json::from_slice(&request.into_body().collect().await?.to_bytes())?;
            upstream
                .calls
                .lock()
                .unwrap()
                .push((start.elapsed(), body.clone()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            match upstream.fail.load(Ordering::SeqCst) {
                0 => {}
                1 => return Err::<_, BoxError>("connection reset".into()),
                status => {
                    return Ok(Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(
                            br#"{"error":{"message":"Overloaded"}}"#,
                        )))
                        .unwrap());
                }
            }
            let inputs = match &body["input"] {
                Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            };
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(index, input)| {
                    let text = input.as_str().unwrap_or_default();
                    let first = text.bytes().next().unwrap_or(0);
                    json!({"object": "embedding", "index": index, "embedding": [text.len(), first]})
                })
                .collect();
            let n = data.len();
            let answer = json!({"object": "list", "data": data, "model": body["model"],
                                "usage": {"prompt_tokens": n * 3, "total_tokens": n * 3}});
            Ok(Response::new(Full::new(Bytes::from(answer.to_string()))))
        }
    });
    (BoxCloneSyncService::new(service), seen)
}

fn stack(config: BatchConfig) -> (Stack, Arc<Upstream>, Instant) {
    let start = Instant::now();
    let (inner, upstream) = upstream(start);
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(BatchLayer::with_config(EmbeddingsCodec, config))
        .service(inner);
    (BoxCloneSyncService::new(stack), upstream, start)
}

fn config(max: u32, wait_ms: u64) -> BatchConfig {
    BatchConfig {
        max_batch_size: max,
        max_wait: Duration::from_millis(wait_ms),
        ..BatchConfig::default()
    }
}

fn embed(model: &str, input: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": model, "input": input}).to_string();
    Request::post("https://api.openai.com/v1/embeddings")
        .header("authorization", "Bearer sk-batch")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Sends one request; returns the status and the body as JSON.
async fn send(stack: Stack, request: Request<Full<Bytes>>) -> Result<(u16, Value), BoxError> {
    let response = stack.oneshot(request).await?;
    let status = response.status().as_u16();
    let body = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return Err(error),
    };
    Ok((status, serde_json::from_slice(&body).map_err(Box::new)?))
}

/// Sends every request at once, in order; returns their results in the same order.
async fn send_all(
    stack: &Stack,
    requests: Vec<Request<Full<Bytes>>>,
) -> Vec<Result<(u16, Value), BoxError>> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let stack = stack.clone();
            tokio::spawn(async move { send(stack, request).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn inputs_of(call: &Value) -> usize {
    call["input"].as_array().map_or(1, Vec::len)
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_at_once_and_each_caller_gets_its_own_vector() {
    let (stack, upstream, _) = stack(config(4, 1_000));
    let words = ["a", "bb", "ccc", "dddd"];
    let results = send_all(&stack, words.iter().map(|w| embed("m", w)).collect()).await;
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, Duration::ZERO, "full: no waiting for max_wait");
    assert_eq!(calls[0].1["input"], json!(["a", "bb", "ccc", "dddd"]));
    for (word, result) in words.iter().zip(results) {
        let (status, body) = result.unwrap();
        assert_eq!(status, 200);
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["index"], 0);
        assert_eq!(
            data[0]["embedding"],
            json!([word.len(), word.as_bytes()[0]])
        );
        assert_eq!(body["usage"]["prompt_tokens"], 3, "12 tokens split 4 ways");
    }
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_goes_after_max_wait() {
    let (stack, upstream, _) = stack(config(256, 10));
    let results = send_all(&stack, (0..3).map(|i| embed("m", &i.to_string())).collect()).await;
    assert!(results.iter().all(Result::is_ok));
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, Duration::from_millis(10));
    assert_eq!(inputs_of(&calls[0].1), 3);
}

#[tokio::test(start_paused = true)]
async fn the_token_cap_splits_batches() {
    // About 100 tokens each (400 characters); at most 250 tokens per call.
    let (stack, upstream, _) = stack(BatchConfig {
        max_tokens: Some(250),
        ..config(256, 10)
    });
    let long = "word ".repeat(80);
    let results = send_all(&stack, (0..6).map(|_| embed("m", &long)).collect()).await;
    assert!(results.iter().all(Result::is_ok));
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "two per call");
    assert!(calls.iter().all(|(_, body)| inputs_of(body) == 2));
}

#[tokio::test(start_paused = true)]
async fn different_models_never_merge() {
    let (stack, upstream, _) = stack(config(256, 10));
    let requests = (0..6)
        .map(|i| embed(if i % 2 == 0 { "small" } else { "large" }, "x"))
        .collect();
    let results = send_all(&stack, requests).await;
    assert!(results.iter().all(Result::is_ok));
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    for (_, body) in &calls {
        assert_eq!(inputs_of(body), 3);
    }
    let models: Vec<&str> = calls
        .iter()
        .map(|(_, b)| b["model"].as_str().unwrap())
        .collect();
    assert!(models.contains(&"small") && models.contains(&"large"));
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_gives_every_member_the_refusal() {
    let (stack, upstream, _) = stack(config(3, 10));
    upstream.fail.store(529, Ordering::SeqCst);
    for result in send_all(&stack, (0..3).map(|_| embed("m", "x")).collect()).await {
        let (status, body) = result.unwrap();
        assert_eq!(status, 529);
        assert_eq!(body["error"]["message"], "Overloaded");
    }
    assert_eq!(upstream.calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_gives_every_member_the_error() {
    let (stack, upstream, _) = stack(config(3, 10));
    upstream.fail.store(1, Ordering::SeqCst);
    for result in send_all(&stack, (0..3).map(|_| embed("m", "x")).collect()).await {
        let error = result.unwrap_err();
        let failed = error.downcast_ref::<BatchFailed>().expect("a BatchFailed");
        let source = std::error::Error::source(failed).unwrap();
        assert_eq!(source.to_string(), "connection reset");
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_before_the_flush_is_left_out() {
    let (stack, upstream, _) = stack(config(256, 10));
    let stay: Vec<_> = (0..2)
        .map(|i| {
            let stack = stack.clone();
            tokio::spawn(async move { send(stack, embed("m", &format!("stay{i}"))).await })
        })
        .collect();
    let leave = {
        let stack = stack.clone();
        tokio::spawn(async move { send(stack, embed("m", "leave")).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    leave.abort();
    for task in stay {
        task.await.unwrap().unwrap();
    }
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1["input"], json!(["stay0", "stay1"]));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_after_the_flush_has_its_share_discarded() {
    let (stack, upstream, _) = stack(config(3, 10));
    let gate = Arc::new(Semaphore::new(0));
    *upstream.gate.lock().unwrap() = Some(gate.clone());
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let stack = stack.clone();
            tokio::spawn(async move { send(stack, embed("m", &format!("w{i}"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut tasks = tasks.into_iter();
    let leaver = tasks.next().unwrap();
    leaver.abort();
    gate.add_permits(1);
    for task in tasks {
        let (status, _) = task.await.unwrap().unwrap();
        assert_eq!(status, 200);
    }
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(inputs_of(&calls[0].1), 3, "it had already been sent");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_fails_clearly_or_makes_callers_wait() {
    let make = stack;
    let (stack, upstream, _) = make(BatchConfig {
        queue_capacity: 2,
        when_full: WhenFull::Fail,
        ..config(256, 10)
    });
    let results = send_all(&stack, (0..3).map(|_| embed("m", "x")).collect()).await;
    let full = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.is::<QueueFull>()))
        .count();
    assert_eq!(full, 1);
    assert_eq!(inputs_of(&upstream.calls.lock().unwrap()[0].1), 2);

    // Waiting: poll_ready is pending until a flush frees room.
    let (stack, upstream, _) = make(BatchConfig {
        queue_capacity: 2,
        ..config(256, 10)
    });
    let mut held = stack.clone();
    let t0 = Instant::now();
    let first_two: Vec<_> = (0..2)
        .map(|_| {
            let stack = stack.clone();
            tokio::spawn(async move { send(stack, embed("m", "x")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    held.ready().await.unwrap();
    let ready_at = Instant::now();
    for task in first_two {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        ready_at - t0,
        Duration::from_millis(10),
        "room once the two waiting were flushed at max_wait"
    );
    assert_eq!(upstream.calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn requests_that_cannot_merge_go_straight_through() {
    let (stack, upstream, _) = stack(config(256, 10));
    let mut chat = embed("m", "x");
    *chat.uri_mut() = "https://api.openai.com/v1/chat/completions"
        .parse()
        .unwrap();
    let (status, _) = send(stack.clone(), chat).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        upstream.calls.lock().unwrap()[0].0,
        Duration::ZERO,
        "no waiting"
    );
}

#[tokio::test(start_paused = true)]
async fn the_size_signal_caps_batches() {
    let start = Instant::now();
    let (inner, upstream) = upstream(start);
    let stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(
                BatchLayer::with_config(EmbeddingsCodec, config(256, 10))
                    .with_size_signal(|_, _| 2),
            )
            .service(inner),
    );
    let results = send_all(&stack, (0..6).map(|_| embed("m", "x")).collect()).await;
    assert!(results.iter().all(Result::is_ok));
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .iter()
            .all(|(at, body)| inputs_of(body) == 2 && at.is_zero())
    );
}

#[test]
fn the_layer_makes_a_clone_sync_service() {
    fn assert_service<S: Service<Request<Full<Bytes>>> + Clone + Send + Sync>() {}
    assert_service::<Annotate<Batch<Inner, EmbeddingsCodec>>>();
}

#[tokio::test(start_paused = true)]
async fn batches_follow_the_overload_signal() {
    use std::sync::atomic::AtomicBool;
    use tollgate_overload::OverloadLayer;

    let start = Instant::now();
    let (inner, upstream) = upstream(start);
    let open = Arc::new(AtomicBool::new(false));
    let probe = open.clone();
    let overload = OverloadLayer::new().with_breaker_probe(move |_| probe.load(Ordering::SeqCst));
    let handle = overload.handle();
    let stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(
                BatchLayer::with_config(EmbeddingsCodec, config(8, 10)).with_size_signal(
                    move |scope, max| handle.recommended_batch_size(scope, max as usize) as u32,
                ),
            )
            .layer(overload)
            .service(inner),
    );
    let burst = || {
        let tasks: Vec<_> = (0..8)
            .map(|_| tokio::spawn(stack.clone().oneshot(embed("m", "x"))))
            .collect();
        async move {
            for task in tasks {
                let response = task.await.unwrap().unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
            }
        }
    };
    burst().await;
    assert_eq!(
        upstream.calls.lock().unwrap().len(),
        1,
        "healthy: one batch of 8"
    );
    // The breaker opens: one request per call.
    open.store(true, Ordering::SeqCst);
    burst().await;
    let calls = upstream.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 9);
    assert!(calls[1..].iter().all(|(_, body)| inputs_of(body) == 1));
}
