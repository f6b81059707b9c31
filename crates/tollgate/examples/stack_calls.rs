//! Runs `N` calls through the standard stack (or the bare service) on its happy path, for
//! counting instructions per call with callgrind: `scripts/stack-instructions` runs it twice and
//! divides the difference, so the setup cancels out. Counts, unlike times, repeat exactly from
//! run to run whatever else the machine is doing.
//!
//! `cargo run --release -p tollgate --example stack_calls -- <bare|stack> <N>`
//!
//! The call is the one `benches/stack.rs` measures: a 300-byte chat completion with an API key,
//! not cacheable, answered at once with a small completion whose body is read to its end.

use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tollgate::{LlmStack, Preset, StackConfig};
use tollgate_testkit::poll::roundtrip_drained;
use tollgate_testkit::runtime;
use tower::{ServiceBuilder, service_fn};

const ANSWER: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}"#;

fn respond(_: Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(ANSWER)))))
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-bench-0123456789")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise: the quick brown fox jumps over the lazy dog, twice, and then once more for luck."}]}"#,
        )))
        .expect("a request")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "stack".to_owned());
    let calls: usize = args
        .next()
        .map(|n| n.parse().expect("N is a number of calls"))
        .unwrap_or(10_000);
    let rt = runtime();
    let _guard = rt.enter();
    let mut bytes = 0;
    match variant.as_str() {
        "bare" => {
            let mut bare = service_fn(respond);
            for _ in 0..calls {
                bytes += roundtrip_drained(&mut bare, request());
            }
        }
        "stack" => {
            let config = StackConfig {
                preset: Some(Preset::Balanced),
                max_concurrent_requests: Some(64),
                seed: Some(1),
                ..StackConfig::default()
            };
            let client = ServiceBuilder::new()
                .map_err(|never: Infallible| -> tollgate::core::BoxError { match never {} })
                .service(service_fn(respond));
            let (mut stack, _handle) = LlmStack::new(&config)
                .expect("a valid config")
                .service(client);
            for _ in 0..calls {
                bytes += roundtrip_drained(&mut stack, request());
            }
        }
        other => panic!("unknown variant {other:?}: bare or stack"),
    }
    assert_eq!(bytes, calls * ANSWER.len(), "every answer read whole");
    println!("{variant}: {calls} calls");
}
