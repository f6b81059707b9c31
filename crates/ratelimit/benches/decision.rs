//! What one rate-limit decision costs, side by side with the peers, in one run.
//!
//! `cargo bench -p tollgate-ratelimit --bench decision`. Three groups:
//!
//! - `single_dimension`: one GCRA decision (one request against requests per minute) next to
//!   governor's direct limiter `check()`, first both on a fake clock (a fixed `now` for
//!   Tollgate, a `FakeRelativeClock` for governor), then both on the real clock;
//! - `three_dimensions`: requests, tokens and input tokens reserved in one all-or-nothing
//!   decision (and requests plus tokens, OpenAI-style), next to governor checking three
//!   limiters in a row (which is not all or nothing);
//! - `full_layer`: `poll_ready`, `call` and the response future through `RateLimitLayer`, through
//!   tower's `RateLimit`, through tower-resilience's `RateLimiterLayer` (a fixed window, its
//!   default) and through nothing, around a service that answers at once; then the
//!   real path, over `ClassifyLayer` with the body drained, so that the reservation is
//!   reconciled from the usage the body reports.
//!
//! Every call is admitted (asserted): the quotas are huge, and on the fake clock both sides move
//! time a minute on every [`REFILL_EVERY`] decisions, which fills any bucket again. Futures
//! are ready at once, so each is polled a single time with a no-op waker: what is measured is
//! the limiters' own work, not an executor's.
//!
//! First the run prints allocations per operation in steady state (the scope exists, the
//! services have run), counted by a global allocator wrapper. The target is none per decision.

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use governor::clock::FakeRelativeClock;
use governor::{Quota as GovernorQuota, RateLimiter};
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::time::Instant;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, LlmRequest};
use tollgate_ratelimit::{
    Charges, MemoryScope, MemoryStore, QuotaTable, Quotas, RateLimitLayer, Refusal, Store,
};
use tollgate_testkit::{allocations_per_op, requests_with, roundtrip, roundtrip_drained, runtime};
use tower::{Layer, Service, service_fn};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The quota of every dimension in the decision groups, on both sides: the largest governor
/// takes (`u32::MAX` a minute), so that both GCRAs have the same interval and depth.
const LIMIT: u32 = u32::MAX;
/// The quotas of the layers, on the real clock: a nanosecond per unit, so no request waits.
const HUGE: u64 = 1_000_000_000_000_000;
const MINUTE: Duration = Duration::from_secs(60);
/// Decisions between two moves of the fake clock: 2^16 requests of 1,000 tokens fit in a full
/// bucket of `u32::MAX` tokens.
const REFILL_EVERY: u64 = 1 << 16;
/// One request, no tokens: one unit of requests per minute.
const ONE_REQUEST: Charges = Charges::request(0, 0);
/// 500 input tokens and 500 output tokens: 1,000 tokens, 500 of them input.
const CHAT: Charges = Charges::request(500, 500);
const CHAT_TOKENS: NonZeroU32 = NonZeroU32::new(1_000).unwrap();
const CHAT_INPUT: NonZeroU32 = NonZeroU32::new(500).unwrap();

/// A small OpenAI chat completion whose usage (431 in, 402 out) reconciles the reservation.
const CHAT_RESPONSE: &[u8] = br#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":431,"completion_tokens":402,"total_tokens":833}}"#;

fn governor_quota() -> GovernorQuota {
    GovernorQuota::per_minute(NonZeroU32::new(LIMIT).unwrap())
}

/// A store with `quotas` and its one scope, created (the steady state: the scope exists).
fn tollgate(quotas: Quotas) -> (MemoryStore, Arc<MemoryScope>) {
    let store = MemoryStore::new(QuotaTable::new(quotas));
    let scope = LlmRequest::scope(&chat_annotation());
    let state = store.scope(&scope, Instant::now());
    (store, state)
}

/// One decision, as the layer makes it, refused rather than queued if it would wait.
fn decide(
    store: &MemoryStore,
    scope: &Arc<MemoryScope>,
    charges: Charges,
    now: Instant,
) -> Result<Instant, Refusal> {
    store
        .reserve(scope, charges, now, Duration::ZERO)
        .into_inner()
}

/// What `AnnotateLayer` would say about a 2 KB chat call to gpt-4o-mini.
fn chat_annotation() -> LlmRequest {
    let mut llm = tollgate_testkit::chat_annotation();
    llm.max_output_tokens = Some(256);
    llm.input_tokens_estimate = 500;
    llm
}

/// Makes annotated requests; the annotation's strings are shared, not copied.
fn chat_requests() -> impl FnMut() -> Request<()> {
    requests_with(chat_annotation())
}

fn respond(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}

fn respond_json(_: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::from_static(CHAT_RESPONSE)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    ready(Ok(response))
}

fn bare() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> {
    service_fn(respond)
}

fn tower_rate_limit() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> {
    tower::limit::RateLimitLayer::new(u64::MAX, MINUTE).layer(service_fn(respond))
}

fn tower_resilience_rate_limit()
-> impl Service<Request<()>, Response = Response<()>, Error = impl std::fmt::Debug> {
    tower_resilience_ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(HUGE as usize)
        .refresh_period(MINUTE)
        .build()
        .expect("a valid rate limiter")
        .layer(service_fn(respond))
}

fn tollgate_layer() -> impl Service<Request<()>, Response = Response<()>, Error = BoxError> {
    RateLimitLayer::new(Quotas::per_minute(HUGE, HUGE)).layer(service_fn(respond))
}

fn classify_bare() -> impl Service<
    Request<()>,
    Response = Response<impl Body<Data = Bytes, Error = BoxError> + Unpin>,
    Error = Infallible,
> {
    ClassifyLayer::new().layer(service_fn(respond_json))
}

fn tollgate_over_classify() -> impl Service<
    Request<()>,
    Response = Response<impl Body<Data = Bytes, Error = BoxError> + Unpin>,
    Error = BoxError,
> {
    let layer = RateLimitLayer::new(Quotas::per_minute(HUGE, HUGE));
    let store = layer.store().clone();
    let mut service = layer.layer(ClassifyLayer::new().layer(service_fn(respond_json)));
    // The real path: the body's end reconciles the reservation with the reported usage.
    roundtrip_drained(&mut service, chat_requests()());
    let scope = store.scope(&LlmRequest::scope(&chat_annotation()), Instant::now());
    assert_eq!(
        MemoryStore::stats(&scope).output_estimate(0),
        402,
        "the reservation was reconciled from the usage"
    );
    service
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut rows = Vec::new();

    let now = Instant::now();
    for (name, quotas, charges) in [
        (
            "single_dimension/tollgate",
            Quotas::per_minute(LIMIT.into(), 0),
            ONE_REQUEST,
        ),
        (
            "three_dimensions/tollgate",
            Quotas::per_minute(LIMIT.into(), LIMIT.into()).with_input_output(LIMIT.into(), 0),
            CHAT,
        ),
    ] {
        let (store, scope) = tollgate(quotas);
        let per_op = allocations_per_op(GLOBAL, || now, |now| decide(&store, &scope, charges, now));
        rows.push((name, per_op));
    }

    let mut service = bare();
    let per_op = allocations_per_op(GLOBAL, chat_requests(), |r| roundtrip(&mut service, r));
    rows.push(("full_layer/bare", per_op));
    let mut service = tower_rate_limit();
    let per_op = allocations_per_op(GLOBAL, chat_requests(), |r| roundtrip(&mut service, r));
    rows.push(("full_layer/tower_rate_limit", per_op));
    let mut service = tower_resilience_rate_limit();
    let per_op = allocations_per_op(GLOBAL, chat_requests(), |r| roundtrip(&mut service, r));
    rows.push(("full_layer/tower_resilience", per_op));
    let mut service = tollgate_layer();
    let per_op = allocations_per_op(GLOBAL, chat_requests(), |r| roundtrip(&mut service, r));
    rows.push(("full_layer/tollgate", per_op));
    let mut service = classify_bare();
    let per_op = allocations_per_op(GLOBAL, chat_requests(), |r| {
        roundtrip_drained(&mut service, r)
    });
    rows.push(("full_layer/classify_bare_drained", per_op));
    let mut service = tollgate_over_classify();
    let per_op = allocations_per_op(GLOBAL, chat_requests(), |r| {
        roundtrip_drained(&mut service, r)
    });
    rows.push(("full_layer/tollgate_over_classify_drained", per_op));

    println!("allocations per operation in steady state (target: 0 per decision)");
    for (name, per_op) in rows {
        println!("  {name:<45} {per_op:>6.2}");
    }
}

fn single_dimension(c: &mut Criterion) {
    let mut group = c.benchmark_group("single_dimension");

    let clock = FakeRelativeClock::default();
    let governor = RateLimiter::direct_with_clock(governor_quota(), clock.clone());
    group.bench_function("governor_fake_clock", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for i in 0..iters {
                if i % REFILL_EVERY == 0 {
                    clock.advance(MINUTE);
                }
                assert!(black_box(&governor).check().is_ok());
            }
            start.elapsed()
        })
    });

    let (store, scope) = tollgate(Quotas::per_minute(LIMIT.into(), 0));
    let mut now = Instant::now();
    group.bench_function("tollgate_fake_clock", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for i in 0..iters {
                if i % REFILL_EVERY == 0 {
                    now += MINUTE;
                }
                assert!(decide(black_box(&store), &scope, ONE_REQUEST, black_box(now)).is_ok());
            }
            start.elapsed()
        })
    });

    // The real clock refills faster (72 M a second) than either side decides.
    let governor = RateLimiter::direct(governor_quota());
    group.bench_function("governor_real_clock", |b| {
        b.iter(|| assert!(black_box(&governor).check().is_ok()))
    });
    let (store, scope) = tollgate(Quotas::per_minute(LIMIT.into(), 0));
    group.bench_function("tollgate_real_clock", |b| {
        b.iter(|| {
            // What `tokio::time::Instant::now()` is outside tests: the dev-dependencies turn on
            // tokio's `test-util`, which adds a look for a paused clock to every read.
            let now = Instant::from_std(std::time::Instant::now());
            assert!(decide(black_box(&store), &scope, ONE_REQUEST, now).is_ok());
        })
    });
    group.finish();
}

fn three_dimensions(c: &mut Criterion) {
    let mut group = c.benchmark_group("three_dimensions");

    let clock = FakeRelativeClock::default();
    let requests = RateLimiter::direct_with_clock(governor_quota(), clock.clone());
    let tokens = RateLimiter::direct_with_clock(governor_quota(), clock.clone());
    let input = RateLimiter::direct_with_clock(governor_quota(), clock.clone());
    group.bench_function("governor_three_limiters", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for i in 0..iters {
                if i % REFILL_EVERY == 0 {
                    clock.advance(MINUTE);
                }
                assert!(black_box(&requests).check().is_ok());
                assert!(matches!(
                    black_box(&tokens).check_n(CHAT_TOKENS),
                    Ok(Ok(()))
                ));
                assert!(matches!(black_box(&input).check_n(CHAT_INPUT), Ok(Ok(()))));
            }
            start.elapsed()
        })
    });

    for (name, quotas) in [
        (
            "tollgate_two_dimensions",
            Quotas::per_minute(LIMIT.into(), LIMIT.into()),
        ),
        (
            "tollgate_three_dimensions",
            Quotas::per_minute(LIMIT.into(), LIMIT.into()).with_input_output(LIMIT.into(), 0),
        ),
    ] {
        let (store, scope) = tollgate(quotas);
        let mut now = Instant::now();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for i in 0..iters {
                    if i % REFILL_EVERY == 0 {
                        now += MINUTE;
                    }
                    assert!(decide(black_box(&store), &scope, CHAT, black_box(now)).is_ok());
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn full_layer(c: &mut Criterion) {
    // Tower's `RateLimit` and Tollgate's layer read tokio's clock, and tower's makes its `Sleep`
    // up front.
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("full_layer");
    // Requests are made outside the timing; dropping them inside is the same for every variant.
    let small = BatchSize::SmallInput;

    let mut service = bare();
    group.bench_function("bare", |b| {
        b.iter_batched(chat_requests(), |r| roundtrip(&mut service, r), small)
    });
    let mut service = tower_rate_limit();
    group.bench_function("tower_rate_limit", |b| {
        b.iter_batched(chat_requests(), |r| roundtrip(&mut service, r), small)
    });
    let mut service = tower_resilience_rate_limit();
    group.bench_function("tower_resilience", |b| {
        b.iter_batched(chat_requests(), |r| roundtrip(&mut service, r), small)
    });
    let mut service = tollgate_layer();
    group.bench_function("tollgate", |b| {
        b.iter_batched(chat_requests(), |r| roundtrip(&mut service, r), small)
    });

    let mut service = classify_bare();
    group.bench_function("classify_bare_drained", |b| {
        b.iter_batched(
            chat_requests(),
            |r| roundtrip_drained(&mut service, r),
            small,
        )
    });
    let mut service = tollgate_over_classify();
    group.bench_function("tollgate_over_classify_drained", |b| {
        b.iter_batched(
            chat_requests(),
            |r| roundtrip_drained(&mut service, r),
            small,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    allocations,
    single_dimension,
    three_dimensions,
    full_layer
);
criterion_main!(benches);
