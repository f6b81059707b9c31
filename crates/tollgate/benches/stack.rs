//! What the whole standard stack costs a call on its happy path, against the bare service, in
//! one run: `cargo bench -p tollgate --bench stack`.
//!
//! Around a service that answers at once with a small chat completion (so what is measured is
//! the stack's own work), each iteration is `poll_ready`, `call` and the response future, each
//! polled once with a no-op waker inside a tokio runtime context, then the body read to its end
//! and the response dropped. The request is a 300-byte chat completion with an API key, not
//! cacheable (no temperature 0), so every layer runs: Annotate parses it, the cache and the
//! batcher pass it on, retry, breaker, overload, rate limit (no quota set: learning from
//! headers), concurrency limit, timeout and classify each do their part.
//!
//! First the allocations per call in steady state, then criterion's measure, then the
//! interleaved medians with the stack's overhead over `bare`.

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate::{LlmService, LlmStack, Preset, StackConfig};
use tollgate_testkit::{Comparison, runtime};
use tower::util::ServiceFn;
use tower::{ServiceBuilder, service_fn};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ANSWER: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}"#;
const BATCH: usize = 500;
const ROUNDS: usize = 100;

type Respond = fn(Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn respond(_: Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(ANSWER)))))
}

fn requests() -> impl FnMut() -> Request<Full<Bytes>> {
    || {
        Request::post("https://api.openai.com/v1/chat/completions")
            .header("authorization", "Bearer sk-bench-0123456789")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise: the quick brown fox jumps over the lazy dog, twice, and then once more for luck."}]}"#,
            )))
            .expect("a request")
    }
}

struct Variants {
    bare: ServiceFn<Respond>,
    stack: LlmService,
}

impl Variants {
    fn new() -> Self {
        let bare = service_fn(respond as Respond);
        let config = StackConfig {
            preset: Some(Preset::Balanced),
            max_concurrent_requests: Some(64),
            seed: Some(1),
            ..StackConfig::default()
        };
        let client = ServiceBuilder::new()
            .map_err(|never: Infallible| -> tollgate_core::BoxError { match never {} })
            .service(bare);
        let (stack, _handle) = LlmStack::new(&config)
            .expect("a valid config")
            .service(client);
        let mut variants = Self { bare, stack };
        variants.comparison().warm_up();
        variants
    }

    fn comparison(&mut self) -> Comparison<'_> {
        Comparison::new()
            .drained("bare", &mut self.bare, requests())
            .drained("standard_stack", &mut self.stack, requests())
    }
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the inner service's own included)");
    Variants::new()
        .comparison()
        .print_allocations(GLOBAL, "stack");
}

fn group(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("stack");
    Variants::new().comparison().bench(&mut group);
    group.finish();
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    let medians = Variants::new().comparison().medians(ROUNDS, BATCH);
    println!("  stack");
    medians.print("bare");
}

criterion_group!(benches, allocations, group, overhead);
criterion_main!(benches);
