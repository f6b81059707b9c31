//! Prompt packing through the layer: short prompts share one call, answers come back to their
//! callers, a prompt the model skipped is re-sent alone, and against tollgate-sim (whose
//! replies are never a JSON array) every prompt is re-sent alone and still answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_batch::{BatchBody, BatchConfig, BatchLayer, PromptPackingCodec};
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_sim::{SimConfig, SimService};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<BatchBody<Full<Bytes>>>, BoxError>;

fn ask(prompt: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50,
        "messages": [{"role": "user", "content": prompt}]});
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-pack")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn chat_reply(content: &str) -> Response<Full<Bytes>> {
    let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
    Response::new(Full::new(Bytes::from(body.to_string())))
}

/// A model that answers packed tasks as asked, except that it skips (null) any task that
/// says "hard"; a prompt alone gets "alone: <prompt>".
fn model(seen: Arc<Mutex<Vec<Value>>>) -> Stack {
    let service = service_fn(move |request: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            let body: Value =
                serde_json::from_slice(&request.into_body().collect().await?.to_bytes())?;
            seen.lock().unwrap().push(body.clone());
            let messages = body["messages"].as_array().unwrap();
            let user = messages.last().unwrap()["content"].as_str().unwrap();
            if messages.len() == 1 {
                return Ok::<_, BoxError>(chat_reply(&format!("alone: {user}")));
            }
            let answers: Vec<Value> = user
                .split("\n\n")
                .map(|task| task.split_once('\n').unwrap().1)
                .map(|task| {
                    if task.contains("hard") {
                        Value::Null
                    } else {
                        json!(format!("packed: {task}"))
                    }
                })
                .collect();
            Ok(chat_reply(&format!(
                "```json\n{}\n```",
                Value::from(answers)
            )))
        }
    });
    stack(service)
}

fn stack<S>(service: S) -> Stack
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(BatchLayer::with_config(
                PromptPackingCodec::new(),
                BatchConfig {
                    max_wait: Duration::from_millis(20),
                    ..BatchConfig::default()
                },
            ))
            .service(service),
    )
}

async fn content(stack: Stack, prompt: String) -> Result<String, BoxError> {
    let response = stack.oneshot(ask(&prompt)).await?;
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    Ok(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned())
}

async fn ask_all(stack: &Stack, prompts: &[&str]) -> Vec<String> {
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| tokio::spawn(content(stack.clone(), (*p).to_owned())))
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    answers
}

#[tokio::test(start_paused = true)]
async fn twelve_fields_in_two_calls_and_a_skipped_one_alone() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stack = model(seen.clone());
    let prompts: Vec<String> = (0..24).map(|i| format!("extract field {i}")).collect();
    let mut prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    prompts[5] = "a hard one";
    let answers = ask_all(&stack, &prompts).await;
    for (prompt, answer) in prompts.iter().zip(&answers) {
        if prompt.contains("hard") {
            assert_eq!(answer, &format!("alone: {prompt}"));
        } else {
            assert_eq!(answer, &format!("packed: {prompt}"));
        }
    }
    let calls = seen.lock().unwrap();
    assert_eq!(
        calls.len(),
        3,
        "two packed calls of 12, and the skipped prompt alone"
    );
    assert_eq!(calls[0]["max_tokens"], 600, "12 caps of 50");
}

#[tokio::test(start_paused = true)]
async fn replies_that_are_not_arrays_are_answered_one_by_one() {
    let sim = SimService::new(SimConfig::from_toml("seed = 2").unwrap()).unwrap();
    let stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(BatchLayer::new(PromptPackingCodec::new()))
            .service(sim.clone()),
    );
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let response = stack.oneshot(ask(&format!("field {i}"))).await.unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = serde_json::from_slice(
                    &response.into_body().collect().await.unwrap().to_bytes(),
                )
                .unwrap();
                body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .len()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap() > 0);
    }
    assert_eq!(
        sim.log().len(),
        7,
        "one packed call, then each prompt alone"
    );
}
