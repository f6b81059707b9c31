//! Actual usage read from every provider's responses, JSON and streamed, through
//! `ClassifyLayer` and `ObservedBody` — in small chunks and whole.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tollgate_core::Usage;
use tollgate_core::body::{EndOfStream, StreamEnd};
use tollgate_core::classify::ClassifyLayer;
use tower::{Layer, ServiceExt, service_fn};

struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

async fn end_of(content_type: &str, body: &str, chunk: usize) -> StreamEnd {
    let chunks: VecDeque<Bytes> = body
        .as_bytes()
        .chunks(chunk)
        .map(Bytes::copy_from_slice)
        .collect();
    let response = Response::builder()
        .header("content-type", content_type)
        .body(Chunks(chunks))
        .unwrap();
    let response = Mutex::new(Some(response));
    let inner = service_fn(move |_: Request<()>| {
        let response = response.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    let response = ClassifyLayer::new()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    response
        .extensions()
        .get::<EndOfStream>()
        .unwrap()
        .on_end(move |end| *sink.lock().unwrap() = Some(end.clone()));
    response.into_body().collect().await.unwrap();
    seen.lock().unwrap().take().expect("reported")
}

fn usage(input: u64, output: u64, cached: u64) -> Option<Usage> {
    let mut usage = Usage::new(input, output);
    usage.cache_read_input_tokens = cached;
    Some(usage)
}

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";

#[tokio::test]
async fn every_provider_reports_its_usage() {
    let cases: Vec<(&str, &str, String, Option<Usage>)> = vec![
        ("openai json", JSON,
         r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3}}}"#.into(),
         usage(19, 10, 3)),
        ("openai sse", SSE, [
            r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
            r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":null}"#,
            r#"data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#,
            "data: [DONE]"].join("\n\n") + "\n\n",
         usage(19, 10, 0)),
        ("azure sse", SSE, [
            r#"data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
            r#"data: {"choices":[{"content_filter_results":{},"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"created":1,"id":"chatcmpl-a","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","usage":null}"#,
            r#"data: {"choices":[],"created":1,"id":"chatcmpl-a","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","usage":{"completion_tokens":7,"prompt_tokens":31,"total_tokens":38}}"#,
            "data: [DONE]"].join("\n\n") + "\n\n",
         usage(31, 7, 0)),
        ("mistral json", JSON,
         r#"{"id":"cmpl-e5","object":"chat.completion","created":1702256327,"model":"mistral-small-latest","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"total_tokens":30,"completion_tokens":18}}"#.into(),
         usage(12, 18, 0)),
        ("mistral sse (usage in the last chunk, unasked)", SSE, [
            r#"data: {"id":"cmpl-1","object":"chat.completion.chunk","created":1,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"data: {"id":"cmpl-1","object":"chat.completion.chunk","created":1,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"total_tokens":14,"completion_tokens":2}}"#,
            "data: [DONE]"].join("\n\n") + "\n\n",
         usage(12, 2, 0)),
        ("llama compat json", JSON,
         r#"{"id":"AhBh","object":"chat.completion","created":1,"model":"Llama-4-Maverick-17B-128E-Instruct-FP8","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":5,"total_tokens":16}}"#.into(),
         usage(11, 5, 0)),
        ("gemini json", JSON,
         r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":10,"totalTokenCount":19,"cachedContentTokenCount":4,"thoughtsTokenCount":5},"modelVersion":"gemini-2.5-flash","responseId":"x"}"#.into(),
         usage(9, 15, 4)),
        ("gemini sse (cumulative)", SSE, [
            r#"data: {"candidates":[{"content":{"parts":[{"text":"The"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.0-flash"}"#,
            r#"data: {"candidates":[{"content":{"parts":[{"text":" end."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":10,"totalTokenCount":19},"modelVersion":"gemini-2.0-flash"}"#,
            ].join("\r\n\r\n") + "\r\n\r\n",
         usage(9, 10, 0)),
        ("gemini embedContent (no usage)", JSON, r#"{"embedding":{"values":[0.1,-0.2,0.3]}}"#.into(), None),
        ("anthropic json", JSON,
         r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":12}}"#.into(),
         usage(135, 12, 100).map(|mut u| {
             u.cache_creation_input_tokens = 10;
             u
         })),
        ("anthropic sse", SSE, [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}"].join("\n\n") + "\n\n",
         usage(25, 15, 0)),
    ];
    for (name, content_type, body, want) in cases {
        for chunk in [1, 7, body.len()] {
            let end = end_of(content_type, &body, chunk).await;
            assert_eq!(end.usage, want, "{name}, chunks of {chunk}");
            assert_eq!(end.error, None, "{name}");
            assert_eq!(end.bytes, body.len() as u64, "{name}");
        }
    }
}
