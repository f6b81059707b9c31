//! What a call costs when nothing is retried: the path almost every request takes.
//!
//! `cargo bench -p tollgate-retry --bench no_retry`. Around an inner service that answers at
//! once, per call (`poll_ready`, `call`, and the response future polled once with a no-op
//! waker, inside a tokio runtime's context): the bare service; tower's `Retry` with a minimal
//! policy that would retry errors but never sees one (it clones each request up front, like
//! Tollgate); `RetryLayer::new()`; and the same without the idempotency key, whose generation
//! costs something. The inner service answers either with an [`Outcome`] already in the
//! response's extensions (as under `ClassifyLayer`: nothing left to classify) or without one
//! (the layer classifies the status and headers itself).
//!
//! Requests, a small JSON chat completion with two headers, are built outside the timing.
//! First the run prints a summary: nanoseconds per call (the median of a few batches, the
//! same way criterion's batched measurement works), the overhead over the bare service, the
//! ratio to tower's `Retry` (of the whole call, and of the overhead alone: the bare call
//! includes dropping the request), and allocations per call, counted by a global allocator
//! wrapper.

use std::alloc::System;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, header};
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate_core::Outcome;
use tollgate_retry::RetryLayer;
use tower::retry::Policy;
use tower::{Layer, Service, service_fn};

// The workspace forbids unsafe code, even in benches, and a `GlobalAlloc` needs an `unsafe
// impl`: `stats_alloc` is that wrapper (atomic counters around `System`), and nothing more.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Body = Full<Bytes>;

const CHAT_REQUEST: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":256}"#;

fn chat_request() -> Request<Body> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer sk-bench")
        .body(Full::new(Bytes::from_static(CHAT_REQUEST)))
        .unwrap()
}

/// A success, already classified (as `ClassifyLayer` leaves it).
fn classified(_: Request<Body>) -> Ready<Result<Response<()>, Infallible>> {
    let mut response = Response::new(());
    response.extensions_mut().insert(Outcome::success());
    ready(Ok(response))
}

/// A bare 200: the retry layer classifies it.
fn unclassified(_: Request<Body>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}

type Respond = fn(Request<Body>) -> Ready<Result<Response<()>, Infallible>>;

/// Tower's retry policy at its smallest: retries errors (a few times), never a response.
#[derive(Clone, Debug)]
struct RetryErrors {
    remaining: u32,
}

impl<Res, E> Policy<Request<Body>, Res, E> for RetryErrors {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Request<Body>, result: &mut Result<Res, E>) -> Option<Ready<()>> {
        if result.is_ok() || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(ready(()))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        Some(request.clone())
    }
}

fn tower_retry(
    respond: Respond,
) -> tower::retry::Retry<
    RetryErrors,
    impl Service<Request<Body>, Response = Response<()>, Error = Infallible> + Clone,
> {
    tower::retry::Retry::new(RetryErrors { remaining: 4 }, service_fn(respond))
}

fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the bench services are always ready"),
    }
}

/// `poll_ready`, `call`, and the response future, each polled once.
fn roundtrip<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: Debug,
{
    now_or_never(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
    now_or_never(service.call(request)).unwrap()
}

/// Allocations per call in steady state: after a warm-up, counting only inside the call.
fn allocations_per_call<S>(service: &mut S) -> f64
where
    S: Service<Request<Body>>,
    S::Error: Debug,
{
    const CALLS: usize = 10_000;
    for _ in 0..100 {
        drop(roundtrip(service, chat_request()));
    }
    let mut allocations = 0;
    for _ in 0..CALLS {
        let request = chat_request();
        let before = GLOBAL.stats();
        let response = black_box(roundtrip(service, request));
        let after = GLOBAL.stats();
        drop(response);
        allocations +=
            after.allocations + after.reallocations - (before.allocations + before.reallocations);
    }
    allocations as f64 / CALLS as f64
}

/// Nanoseconds per call: the median of batches timed like criterion's `iter_batched` (requests
/// made before, responses dropped after).
fn nanos_per_call<S>(service: &mut S) -> f64
where
    S: Service<Request<Body>>,
    S::Error: Debug,
{
    const BATCH: usize = 20_000;
    let mut batches: Vec<f64> = (0..15)
        .map(|_| {
            let requests: Vec<_> = (0..BATCH).map(|_| chat_request()).collect();
            let mut responses = Vec::with_capacity(BATCH);
            let start = std::time::Instant::now();
            for request in requests {
                responses.push(roundtrip(service, request));
            }
            let elapsed = start.elapsed();
            drop(black_box(responses));
            elapsed.as_nanos() as f64 / BATCH as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

fn measure<S>(mut service: S) -> (f64, f64)
where
    S: Service<Request<Body>>,
    S::Error: Debug,
{
    let allocations = allocations_per_call(&mut service);
    (nanos_per_call(&mut service), allocations)
}

fn summary(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!(
        "no-retry path, per call: ns (median of batches), overhead over bare, ratio to tower's \
         Retry (whole call, overhead only), allocations"
    );
    for (inner, respond) in [
        ("classified", classified as Respond),
        ("unclassified", unclassified as Respond),
    ] {
        let bare = measure(service_fn(respond));
        let tower = measure(tower_retry(respond));
        let rows = [
            ("bare", bare),
            ("tower_retry", tower),
            (
                "tollgate",
                measure(RetryLayer::new().layer(service_fn(respond))),
            ),
            (
                "tollgate_no_key",
                measure(
                    RetryLayer::new()
                        .with_idempotency_header(None)
                        .layer(service_fn(respond)),
                ),
            ),
        ];
        for (name, (nanos, allocations)) in rows {
            println!(
                "  {:<30} {nanos:>8.1} ns {:>+8.1} ns {:>6.2}x {:>6.2}x {allocations:>6.2} allocs",
                format!("{inner}/{name}"),
                nanos - bare.0,
                nanos / tower.0,
                (nanos - bare.0) / (tower.0 - bare.0),
            );
        }
    }
}

fn no_retry(c: &mut Criterion) {
    // Tollgate's layer reads tokio's clock.
    let rt = runtime();
    let _guard = rt.enter();
    let small = BatchSize::SmallInput;
    for (inner, respond) in [
        ("classified", classified as Respond),
        ("unclassified", unclassified as Respond),
    ] {
        let mut group = c.benchmark_group(format!("no_retry_{inner}"));
        let mut service = service_fn(respond);
        group.bench_function("bare", |b| {
            b.iter_batched(chat_request, |r| roundtrip(&mut service, r), small)
        });
        let mut service = tower_retry(respond);
        group.bench_function("tower_retry", |b| {
            b.iter_batched(chat_request, |r| roundtrip(&mut service, r), small)
        });
        let mut service = RetryLayer::new().layer(service_fn(respond));
        group.bench_function("tollgate", |b| {
            b.iter_batched(chat_request, |r| roundtrip(&mut service, r), small)
        });
        let mut service = RetryLayer::new()
            .with_idempotency_header(None)
            .layer(service_fn(respond));
        group.bench_function("tollgate_no_key", |b| {
            b.iter_batched(chat_request, |r| roundtrip(&mut service, r), small)
        });
        group.finish();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

criterion_group!(benches, summary, no_retry);
criterion_main!(benches);
