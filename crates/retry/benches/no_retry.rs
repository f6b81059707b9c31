//! What a call costs when nothing is retried: the path almost every request takes.
//!
//! `cargo bench -p tollgate-retry --bench no_retry`. Around an inner service that answers at
//! once, per call (`poll_ready`, `call`, and the response future polled once with a no-op
//! waker, inside a tokio runtime's context): the bare service; tower's `Retry` with a minimal
//! policy that would retry errors but never sees one (it clones each request up front, like
//! Tollgate); tower-resilience's `RetryLayer` with 5 attempts and exponential backoff (it also
//! clones each request, and boxes its future); `RetryLayer::new()`; and the same without the
//! idempotency key, whose generation
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
use std::future::{Ready, ready};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, header};
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate_core::Outcome;
use tollgate_retry::RetryLayer;
use tollgate_testkit::{allocations_per_op, median, nanos_per_op, roundtrip, runtime};
use tower::retry::Policy;
use tower::{Layer, Service, service_fn};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Body = Full<Bytes>;

const CHAT_REQUEST: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":256}"#;

/// Calls per batch in the summary.
const BATCH: usize = 20_000;
/// Batches per variant in the summary, one variant after the other.
const ROUNDS: usize = 15;

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

/// tower-resilience's retry: 5 attempts (as `RetryLayer::new()`), exponential backoff from
/// 1 s, every error retried, never a response.
fn tower_resilience_retry(
    respond: Respond,
) -> impl Service<Request<Body>, Response = Response<()>, Error = Infallible> {
    tower_resilience_retry::RetryLayer::<Request<Body>, Response<()>, Infallible>::builder()
        .max_attempts(5)
        .exponential_backoff(Duration::from_secs(1))
        .build()
        .layer(service_fn(respond))
}

fn tower_retry(
    respond: Respond,
) -> tower::retry::Retry<
    RetryErrors,
    impl Service<Request<Body>, Response = Response<()>, Error = Infallible> + Clone,
> {
    tower::retry::Retry::new(RetryErrors { remaining: 4 }, service_fn(respond))
}

/// Nanoseconds per call (the median of batches timed like criterion's `iter_batched`:
/// requests made before, responses dropped after) and allocations per call in steady state.
fn measure<S>(mut service: S) -> (f64, f64)
where
    S: Service<Request<Body>>,
    S::Error: Debug,
{
    let mut call = |request| roundtrip(&mut service, request);
    let allocations = allocations_per_op(GLOBAL, chat_request, &mut call);
    let batches = (0..ROUNDS).map(|_| nanos_per_op(BATCH, chat_request, &mut call));
    (median(batches.collect()), allocations)
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
            ("tower_resilience", measure(tower_resilience_retry(respond))),
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
        let mut service = tower_resilience_retry(respond);
        group.bench_function("tower_resilience", |b| {
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

criterion_group!(benches, summary, no_retry);
criterion_main!(benches);
