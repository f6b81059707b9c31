//! The deferred queue `[deferred]` describes, opened over the stack's own service: a job
//! written to disk is sent through every layer when the queue flushes.

use bytes::Bytes;
use http::Request;
use serde_json::json;
use tollgate::{LlmStack, StackConfig};
use tollgate_core::BoxError;
use tollgate_sim::{SimConfig, SimService};

#[tokio::test]
async fn the_configured_queue_sends_its_jobs_through_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("queue.redb");
    let text = format!(
        "[deferred]\nstore = {:?}\ninterval = \"1h\"\n",
        store.display().to_string()
    );
    let config = StackConfig::from_toml(&text)
        .unwrap()
        .with_env(|name| (name == "MAX_BATCH_SIZE").then(|| "10".to_owned()))
        .unwrap();
    let sim = SimService::new(SimConfig::default()).unwrap();
    let client = tower::ServiceBuilder::new()
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .service(sim.clone());
    let stack = LlmStack::new(&config).unwrap();
    let (llm, _handle) = stack.service(client);
    // The queue never writes a key to disk: the service it sends through adds it (here a
    // header; a pool's members add their own).
    let llm = tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .map_request(|mut request: Request<http_body_util::Full<Bytes>>| {
                request.headers_mut().insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_static("Bearer sk-later"),
                );
                request
            })
            .service(llm),
    );
    let queue = stack
        .deferred_queue(llm)
        .expect("a [deferred] section")
        .unwrap()
        .open()
        .await
        .unwrap();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 8,
        "messages": [{"role": "user", "content": "later is fine"}]});
    let job = queue
        .submit(
            Request::post("https://api.openai.com/v1/chat/completions")
                .header("authorization", "Bearer sk-later")
                .header("content-type", "application/json")
                .body(Bytes::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(sim.log().is_empty(), "queued, not sent");
    queue.flush();
    let output = queue.wait(job).await.unwrap();
    assert_eq!(output.status, 200);
    assert_eq!(sim.log().len(), 1);
    queue.shutdown().await;

    let no_store = StackConfig::from_toml("[deferred]\ninterval = \"1h\"\n").unwrap();
    let stack = LlmStack::new(&no_store).unwrap();
    let (llm, _) = stack.service(tower::service_fn(|_: Request<_>| async {
        Err::<http::Response<http_body_util::Full<Bytes>>, BoxError>("unused".into())
    }));
    let error = stack.deferred_queue(llm).unwrap().unwrap_err();
    assert_eq!(error.field(), "deferred.store");
    assert!(
        LlmStack::preset(tollgate::Preset::Balanced)
            .deferred_queue(
                stack
                    .service(tower::service_fn(|_: Request<_>| async {
                        Err::<http::Response<http_body_util::Full<Bytes>>, BoxError>(
                            "unused".into(),
                        )
                    }))
                    .0
            )
            .is_none()
    );
}
