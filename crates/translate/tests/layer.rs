//! `TranslateLayer` in front of an upstream of another format: the call it sends, the answer,
//! the stream and the error it hands back, and what it does with fields the upstream lacks.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_translate::{Format, TranslateLayer, UNTRANSLATED_HEADER, WhenUntranslatable};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

type Upstream = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

fn openai_call(body: Value) -> Request<Full<Bytes>> {
    Request::post("https://gateway.internal/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// An Anthropic upstream that answers `status` with `body` and `content_type`, checking the
/// call it gets is an Anthropic one; how many calls it got.
fn anthropic(
    status: u16,
    content_type: &'static str,
    body: String,
) -> (Upstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = tower::service_fn(move |call: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let body = body.clone();
        async move {
            assert_eq!(call.uri().path(), "/v1/messages");
            assert_eq!(call.uri().host(), Some("gateway.internal"));
            assert_eq!(call.headers()["anthropic-version"], "2023-06-01");
            let sent: Value =
                serde_json::from_slice(&call.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            assert_eq!(sent["system"], "Be brief.");
            assert_eq!(
                sent["messages"][0]["content"],
                json!([{"type": "text", "text": "Hi"}])
            );
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .header("retry-after", "7")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
        }
    });
    (BoxCloneService::new(service), calls)
}

fn call_body(extra: Value) -> Value {
    let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 50,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

const OPENAI_TO_CLAUDE: TranslateLayer =
    TranslateLayer::new(Format::OpenAiChat, Format::AnthropicMessages);

#[tokio::test]
async fn an_openai_client_gets_a_claude_answer_in_its_own_shape() {
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 9, "output_tokens": 2}});
    let (upstream, _) = anthropic(200, "application/json", message.to_string());
    let service = ServiceBuilder::new()
        .layer(OPENAI_TO_CLAUDE)
        .service(upstream);
    let answer = service
        .oneshot(openai_call(call_body(json!({}))))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().get(UNTRANSLATED_HEADER).is_none());
    assert_eq!(
        answer.headers()["retry-after"],
        "7",
        "the upstream's headers stay"
    );
    let body: Value =
        serde_json::from_slice(&answer.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 11);
}

#[tokio::test]
async fn a_claude_stream_reaches_an_openai_client_as_chunks() {
    let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let (upstream, _) = anthropic(200, "text/event-stream", stream.to_owned());
    let service = ServiceBuilder::new()
        .layer(OPENAI_TO_CLAUDE)
        .service(upstream);
    let answer = service
        .oneshot(openai_call(call_body(json!({"stream": true}))))
        .await
        .unwrap();
    assert_eq!(answer.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(
        answer
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let chunks: Vec<&str> = text.split("\n\n").filter(|c| !c.is_empty()).collect();
    assert!(chunks[1].contains("\"content\":\"Hel\""), "{text}");
    assert!(chunks[2].contains("\"content\":\"lo\""), "{text}");
    assert!(chunks[3].contains("\"finish_reason\":\"stop\""), "{text}");
    assert!(chunks[4].contains("\"total_tokens\":12"), "{text}");
    assert_eq!(chunks[5], "data: [DONE]");
}

#[tokio::test]
async fn an_overloaded_claude_reaches_an_openai_client_as_a_503() {
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let (upstream, _) = anthropic(529, "application/json", overloaded.to_string());
    let service = ServiceBuilder::new()
        .layer(OPENAI_TO_CLAUDE)
        .service(upstream);
    let answer = service
        .oneshot(openai_call(call_body(json!({}))))
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "7");
    let body: Value =
        serde_json::from_slice(&answer.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["message"], "Overloaded");
}

#[tokio::test]
async fn fields_claude_lacks_are_dropped_and_named_or_refused_unsent() {
    let message = json!({"id": "m", "model": "c", "content": [], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1}});
    let (upstream, calls) = anthropic(200, "application/json", message.to_string());
    let dropping = ServiceBuilder::new()
        .layer(OPENAI_TO_CLAUDE)
        .service(upstream.clone());
    let answer = dropping
        .oneshot(openai_call(call_body(json!({"logprobs": true, "n": 2}))))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()[UNTRANSLATED_HEADER], "logprobs, n");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let refusing = ServiceBuilder::new()
        .layer(OPENAI_TO_CLAUDE.with_untranslatable(WhenUntranslatable::Refuse))
        .service(upstream);
    let answer = refusing
        .oneshot(openai_call(call_body(json!({"logprobs": true}))))
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value =
        serde_json::from_slice(&answer.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("no place for: logprobs"),
        "{body}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never sent");
}
