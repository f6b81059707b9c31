//! What the cache costs a call, hit or miss, next to the bare service, in one run.
//!
//! `cargo bench -p tollgate-cache --bench hit_miss`. Around a service that answers at once with
//! a small chat completion (so what is measured is the cache's own work), each iteration
//! sends one annotated chat request at `temperature` 0 (a 150-byte JSON body, as
//! `AnnotateLayer` passes it on) and reads the response body to its end:
//!
//! - `hit`: through nothing (`bare`); through the cache, answered from memory (`cache_hit`:
//!   the canonical key — parse and SHA-256 of the body —, the lookup, the stored response
//!   rebuilt and replayed); and through the cache for a request it lets through (`bypass`:
//!   `temperature` 0.7). Futures and bodies are ready at once: polled once, no executor.
//! - `miss`: every request new (a counter in the prompt), so each one is a miss that runs
//!   the upstream call on a task of its own, records the answer and stores it, evicting as
//!   the cache fills (10,000 entries). The call needs an executor, so here both `bare` and
//!   `cache_miss` run under a current-thread runtime's `block_on`.
//!
//! First the run prints allocations per call in steady state (the bare service's own
//! included), counted by a global allocator wrapper; last, each variant's time per call and
//! its overhead over `bare`, from the medians of interleaved batches (so that a drift of the
//! machine touches every variant alike), measured apart from criterion.

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::runtime::Runtime;
use tollgate_cache::{Cache, CacheHandle, CacheLayer, CacheStatus, DefaultPolicy};
use tollgate_testkit::{Comparison, Medians, chat_annotation, roundtrip, runtime};
use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceExt, service_fn};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Calls per batch in the overhead summary.
const BATCH: usize = 1_000;
/// Batches per variant in the overhead summary.
const ROUNDS: usize = 200;

const ANSWER: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}"#;

type Respond = fn(Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;
type Upstream = ServiceFn<Respond>;

/// A chat completion, at once.
fn respond(_: Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER)));
    let json = http::HeaderValue::from_static("application/json");
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, json);
    ready(Ok(response))
}

/// Makes chat requests annotated as `AnnotateLayer` would, at `temperature`; each asks
/// `prompt(n)` for the n-th request.
fn chats(temperature: f32, prompt: impl Fn(u64) -> String) -> impl FnMut() -> Request<Full<Bytes>> {
    let uri = Uri::from_static("https://api.openai.com/v1/chat/completions");
    let mut llm = chat_annotation();
    llm.temperature = Some(temperature);
    let mut n = 0;
    move || {
        n += 1;
        let body = format!(
            r#"{{"model":"gpt-4o-mini","temperature":{temperature},"max_tokens":256,"messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"{}"}}]}}"#,
            prompt(n)
        );
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        request.extensions_mut().insert(llm.clone());
        request
    }
}

fn same_question() -> impl FnMut() -> Request<Full<Bytes>> {
    chats(0.0, |_| "What is the capital of France?".into())
}

fn new_questions() -> impl FnMut() -> Request<Full<Bytes>> {
    chats(0.0, |n| format!("What is {n} squared?"))
}

fn random_questions() -> impl FnMut() -> Request<Full<Bytes>> {
    chats(0.7, |_| "Write a haiku.".into())
}

type Cached = Cache<Upstream, DefaultPolicy>;

/// Every variant, around the same inner service.
struct Variants {
    bare: Upstream,
    hit: Cached,
    hit_handle: CacheHandle,
    bypass: Cached,
    miss: Cached,
    miss_handle: CacheHandle,
}

impl Variants {
    /// Built, with the hit's answer stored.
    fn new(rt: &Runtime) -> Self {
        let upstream = service_fn(respond as Respond);
        let (hit, miss) = (CacheLayer::default(), CacheLayer::default());
        let mut variants = Self {
            bare: upstream,
            hit_handle: hit.handle(),
            hit: hit.layer(upstream),
            bypass: CacheLayer::default().layer(upstream),
            miss_handle: miss.handle(),
            miss: miss.layer(upstream),
        };
        let stored = rt.block_on(call_drained(&mut variants.hit, same_question()()));
        assert_eq!(stored, CacheStatus::Miss);
        variants
    }

    /// The ready-at-once variants: `bare` first.
    fn hits(&mut self) -> Comparison<'_> {
        Comparison::new()
            .variant("bare", same_question(), |r| drained(&mut self.bare, r))
            .variant("cache_hit", same_question(), |r| {
                hit(&mut self.hit, r, CacheStatus::Hit)
            })
            .variant("bypass", random_questions(), |r| {
                hit(&mut self.bypass, r, CacheStatus::Bypass)
            })
    }

    /// The variants that need an executor: `bare` first.
    fn misses<'a>(&'a mut self, rt: &'a Runtime) -> Comparison<'a> {
        Comparison::new()
            .variant("bare", new_questions(), |r| {
                rt.block_on(async { drained(&mut self.bare, r) })
            })
            .variant("cache_miss", new_questions(), |r| {
                let status = rt.block_on(call_drained(&mut self.miss, r));
                assert_eq!(status, CacheStatus::Miss);
            })
    }

    fn assert_counts(&self) {
        let hit = self.hit_handle.snapshot();
        assert_eq!((hit.misses, hit.stored), (1, 1), "{hit:?}");
        let miss = self.miss_handle.snapshot();
        assert_eq!(miss.hits, 0, "{miss:?}");
        assert_eq!(miss.stored, miss.misses, "{miss:?}");
    }
}

/// The bare service's answer, read to its end.
fn drained(service: &mut Upstream, request: Request<Full<Bytes>>) -> usize {
    tollgate_testkit::roundtrip_drained(service, request)
}

/// A call that is ready at once, read to its end; it must have been answered as `expected`.
fn hit(service: &mut Cached, request: Request<Full<Bytes>>, expected: CacheStatus) -> usize {
    let response = roundtrip(service, request);
    assert_eq!(response.extensions().get(), Some(&expected));
    tollgate_testkit::drain(response.into_body())
}

/// A call on the runtime, read to its end; how it was answered.
async fn call_drained(service: &mut Cached, request: Request<Full<Bytes>>) -> CacheStatus {
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let status = *response.extensions().get::<CacheStatus>().unwrap();
    response.into_body().collect().await.unwrap();
    status
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the bare service's own included)");
    let mut v = Variants::new(&rt);
    v.hits().print_allocations(GLOBAL, "hit");
    v.misses(&rt).print_allocations(GLOBAL, "miss");
    v.assert_counts();
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut v = Variants::new(&rt);
    let mut group = c.benchmark_group("hit");
    v.hits().bench(&mut group);
    group.finish();
    let mut group = c.benchmark_group("miss");
    v.misses(&rt).bench(&mut group);
    group.finish();
    v.assert_counts();
}

/// Prints each variant's time per call and its overhead over the first (`bare`).
fn print(medians: &Medians) {
    let (_, bare) = medians.rows()[0];
    println!(
        "    {:<12} {:>9} {:>9} {:>8}",
        "", "ns/call", "overhead", "x bare"
    );
    for &(name, ns) in medians.rows() {
        println!(
            "    {name:<12} {ns:>9.1} {:>9.1} {:>8.2}",
            ns - bare,
            ns / bare
        );
    }
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut v = Variants::new(&rt);
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    println!("  hit");
    print(&v.hits().medians(ROUNDS, BATCH));
    println!("  miss (each call under block_on)");
    print(&v.misses(&rt).medians(ROUNDS, BATCH));
    v.assert_counts();
}

criterion_group!(benches, allocations, bench, overhead);
criterion_main!(benches);
