//! What the overload layer costs a call that never waits and is never shed, side by side with
//! tower's fixed `ConcurrencyLimit`, in one run.
//!
//! `cargo bench -p tollgate-overload --bench happy_path`. Around a service that answers at once
//! with a small 200 (so what is measured is the layers' own work, Tollgate's classification of
//! the 200 included), each iteration is `poll_ready`, `call` and the response future, each
//! polled once with a no-op waker inside a tokio runtime context, then the body read to its end
//! and the response dropped, so that the permit is back before the next call. Calls come one at
//! a time, so no limit is ever reached (an AIMD limit starts at 4):
//!
//! - `overload_happy_path`: through nothing (`bare`), through tower's
//!   `ConcurrencyLimitLayer::new(64)` (`tower`), and through [`OverloadLayer`]:
//!   [`new`](OverloadLayer::new) (AIMD, throttle on, one state per scope) with requests
//!   annotated as `AnnotateLayer` would (`tollgate_aimd`) and with requests it cannot place,
//!   which share one default scope (`tollgate_aimd_unannotated`);
//!   [`without_throttle`](OverloadLayer::without_throttle) (`tollgate_aimd_no_throttle`); and
//!   with [`Gradient`] (`tollgate_gradient`).
//!
//! Every request carries one extension, so that all variants drop the same: the
//! [`LlmRequest`], or for `tollgate_aimd_unannotated` a [`Priority::Interactive`] (the default,
//! so the layer acts as without it).
//!
//! First the run prints allocations per call in steady state (the scope's state exists, the
//! services have run), counted by a global allocator wrapper. Last it prints each variant's
//! time per call, its overhead over `bare`, and both against tower's, measured apart from
//! criterion: the variants in turn, batch after batch, so that a drift of the machine touches
//! them all alike; the medians of the batches are shown.
//!
//! Every scope is asserted Normal with nothing in flight after each benchmark.

use std::alloc::System;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate_concurrency::Priority;
use tollgate_core::{CredentialId, EndpointKind, LlmRequest, Provider, Scope};
use tollgate_overload::{Gradient, Overload, OverloadHandle, OverloadLayer, OverloadState};
use tower::util::ServiceFn;
use tower::{Layer, Service, service_fn};

// The workspace forbids unsafe code, even in benches, and a `GlobalAlloc` needs an `unsafe
// impl`: `stats_alloc` is that wrapper (atomic counters around `System`), and nothing more.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The limit of tower's layer: never reached, calls come one at a time.
const TOWER_LIMIT: usize = 64;
/// What the inner service answers (static: making it allocates nothing).
const BODY: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#;
/// Calls per batch in the overhead summary.
const BATCH: usize = 2_000;
/// Batches per variant in the overhead summary.
const ROUNDS: usize = 300;

type Respond = fn(Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;
type Inner = ServiceFn<Respond>;

/// A 200 with a small body, unclassified: Tollgate classifies it.
fn respond(_: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(BODY)))))
}

/// What `AnnotateLayer` would say about a chat call to gpt-4o-mini.
fn chat_annotation() -> LlmRequest {
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.credential = Some(CredentialId::named("team-a"));
    llm.model = Some("gpt-4o-mini".into());
    llm
}

/// The scope requests without an [`LlmRequest`] fall to.
fn default_scope() -> Scope {
    Scope::new(Provider::OpenAiCompatible)
}

/// Makes annotated requests; the annotation's strings are shared, not copied.
fn chat_requests() -> impl FnMut() -> Request<()> {
    let annotation = chat_annotation();
    move || {
        let mut request = Request::new(());
        request.extensions_mut().insert(annotation.clone());
        request
    }
}

/// Makes requests without an [`LlmRequest`], carrying the default priority instead.
fn unannotated_requests() -> impl FnMut() -> Request<()> {
    || {
        let mut request = Request::new(());
        request.extensions_mut().insert(Priority::Interactive);
        request
    }
}

/// Every variant, around the same inner service.
struct Variants {
    bare: Inner,
    tower: tower::limit::ConcurrencyLimit<Inner>,
    aimd: Overload<Inner>,
    aimd_handle: OverloadHandle,
    unannotated: Overload<Inner>,
    unannotated_handle: OverloadHandle,
    no_throttle: Overload<Inner>,
    no_throttle_handle: OverloadHandle,
    gradient: Overload<Inner>,
    gradient_handle: OverloadHandle,
}

impl Variants {
    /// Built and run once each, so that the scopes' state exists.
    fn new() -> Self {
        let inner = service_fn(respond as Respond);
        let aimd = OverloadLayer::new();
        let unannotated = OverloadLayer::new();
        let no_throttle = OverloadLayer::new().without_throttle();
        let gradient = OverloadLayer::new().with_algorithm(Gradient::new());
        let mut variants = Self {
            bare: inner,
            tower: tower::limit::ConcurrencyLimitLayer::new(TOWER_LIMIT).layer(inner),
            aimd: aimd.layer(inner),
            aimd_handle: aimd.handle(),
            unannotated: unannotated.layer(inner),
            unannotated_handle: unannotated.handle(),
            no_throttle: no_throttle.layer(inner),
            no_throttle_handle: no_throttle.handle(),
            gradient: gradient.layer(inner),
            gradient_handle: gradient.handle(),
        };
        let mut requests = chat_requests();
        happy_path(&mut variants.bare, requests());
        happy_path(&mut variants.tower, requests());
        happy_path(&mut variants.aimd, requests());
        happy_path(&mut variants.unannotated, unannotated_requests()());
        happy_path(&mut variants.no_throttle, requests());
        happy_path(&mut variants.gradient, requests());
        variants.assert_normal();
        variants
    }

    /// Each variant's handle, the scope its requests fall to, and its name.
    fn handles(&self) -> [(&'static str, &OverloadHandle, Scope); 4] {
        let chat = chat_annotation().scope();
        [
            ("tollgate_aimd", &self.aimd_handle, chat.clone()),
            (
                "tollgate_aimd_unannotated",
                &self.unannotated_handle,
                default_scope(),
            ),
            (
                "tollgate_aimd_no_throttle",
                &self.no_throttle_handle,
                chat.clone(),
            ),
            ("tollgate_gradient", &self.gradient_handle, chat),
        ]
    }

    /// Every call ended and gave its permit back, and none was taken for overload.
    fn assert_normal(&self) {
        for (name, handle, scope) in self.handles() {
            assert!(handle.limit(&scope).is_some(), "{name}: the scope exists");
            assert_eq!(handle.in_flight(&scope), 0, "{name}: nothing in flight");
            assert_eq!(handle.state(&scope), OverloadState::Normal, "{name}");
            assert_eq!(handle.snapshot().len(), 1, "{name}: one scope");
        }
    }

    fn print_limits(&self) {
        for (name, handle, scope) in self.handles() {
            let limit = handle.limit(&scope).unwrap_or_default();
            println!("    {name:<27} limit {limit}");
        }
    }
}

fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the bench services and bodies are always ready"),
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

/// One call as a caller makes it: the round trip, the body read to its end (which gives
/// Tollgate's permit back), the response dropped. Returns the bytes read.
fn happy_path<S, B>(service: &mut S, request: Request<()>) -> usize
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    let mut body = pin!(roundtrip(service, request).into_body());
    let mut read = 0;
    while let Some(frame) = now_or_never(body.as_mut().frame()) {
        if let Ok(data) = frame.unwrap().into_data() {
            read += data.remaining();
        }
    }
    debug_assert_eq!(read, BODY.len());
    read
}

/// Allocations per call in steady state: after a warm-up, counting the whole happy path.
fn allocations_per_call<S, B>(service: &mut S, mut requests: impl FnMut() -> Request<()>) -> f64
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    const CALLS: usize = 10_000;
    for _ in 0..100 {
        happy_path(service, requests());
    }
    let mut allocations = 0;
    for _ in 0..CALLS {
        let request = requests();
        let before = GLOBAL.stats();
        black_box(happy_path(service, request));
        let after = GLOBAL.stats();
        allocations +=
            after.allocations + after.reallocations - (before.allocations + before.reallocations);
    }
    allocations as f64 / CALLS as f64
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the inner service's own included)");
    let mut v = Variants::new();
    let rows = [
        ("bare", allocations_per_call(&mut v.bare, chat_requests())),
        ("tower", allocations_per_call(&mut v.tower, chat_requests())),
        (
            "tollgate_aimd",
            allocations_per_call(&mut v.aimd, chat_requests()),
        ),
        (
            "tollgate_aimd_unannotated",
            allocations_per_call(&mut v.unannotated, unannotated_requests()),
        ),
        (
            "tollgate_aimd_no_throttle",
            allocations_per_call(&mut v.no_throttle, chat_requests()),
        ),
        (
            "tollgate_gradient",
            allocations_per_call(&mut v.gradient, chat_requests()),
        ),
    ];
    v.assert_normal();
    for (name, per_call) in rows {
        println!(
            "  {:<45} {per_call:>6.2}",
            format!("overload_happy_path/{name}")
        );
    }
}

fn happy_path_group(c: &mut Criterion) {
    // Tollgate reads tokio's clock.
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("overload_happy_path");
    let mut v = Variants::new();
    // Requests are made outside the timing; dropping them inside is the same for every variant
    // (the inner service drops them). The body is read and the response dropped inside it, as
    // the permit must be back before the next call.
    let small = BatchSize::SmallInput;
    group.bench_function("bare", |b| {
        b.iter_batched(chat_requests(), |r| happy_path(&mut v.bare, r), small)
    });
    group.bench_function("tower", |b| {
        b.iter_batched(chat_requests(), |r| happy_path(&mut v.tower, r), small)
    });
    group.bench_function("tollgate_aimd", |b| {
        b.iter_batched(chat_requests(), |r| happy_path(&mut v.aimd, r), small)
    });
    group.bench_function("tollgate_aimd_unannotated", |b| {
        let requests = unannotated_requests();
        b.iter_batched(requests, |r| happy_path(&mut v.unannotated, r), small)
    });
    group.bench_function("tollgate_aimd_no_throttle", |b| {
        b.iter_batched(
            chat_requests(),
            |r| happy_path(&mut v.no_throttle, r),
            small,
        )
    });
    group.bench_function("tollgate_gradient", |b| {
        b.iter_batched(chat_requests(), |r| happy_path(&mut v.gradient, r), small)
    });
    v.assert_normal();
    group.finish();
}

/// Nanoseconds per call of one batch.
fn batch<S, B>(service: &mut S, requests: &mut impl FnMut() -> Request<()>) -> f64
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    let batch: Vec<_> = (0..BATCH).map(|_| requests()).collect();
    let start = std::time::Instant::now();
    for request in batch {
        black_box(happy_path(service, request));
    }
    start.elapsed().as_nanos() as f64 / BATCH as f64
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    let mut v = Variants::new();
    let mut chat = chat_requests();
    let mut unannotated = unannotated_requests();
    let mut samples: [Vec<f64>; 6] = Default::default();
    for _ in 0..ROUNDS {
        samples[0].push(batch(&mut v.bare, &mut chat));
        samples[1].push(batch(&mut v.tower, &mut chat));
        samples[2].push(batch(&mut v.aimd, &mut chat));
        samples[3].push(batch(&mut v.unannotated, &mut unannotated));
        samples[4].push(batch(&mut v.no_throttle, &mut chat));
        samples[5].push(batch(&mut v.gradient, &mut chat));
    }
    v.assert_normal();
    let [bare, tower, aimd, unannotated, no_throttle, gradient] = samples.map(median);
    println!("  overload_happy_path");
    println!(
        "    {:<27} {:>9} {:>9} {:>11} {:>17}",
        "", "ns/call", "overhead", "vs tower", "overhead vs tower"
    );
    let tower_overhead = tower - bare;
    for (name, ns) in [
        ("bare", bare),
        ("tower", tower),
        ("tollgate_aimd", aimd),
        ("tollgate_aimd_unannotated", unannotated),
        ("tollgate_aimd_no_throttle", no_throttle),
        ("tollgate_gradient", gradient),
    ] {
        let over = ns - bare;
        let (ratio, over_ratio) = if name == "bare" {
            (String::new(), String::new())
        } else {
            (
                format!("{:.2}", ns / tower),
                format!("{:.2}", over / tower_overhead),
            )
        };
        println!("    {name:<27} {ns:>9.1} {over:>9.1} {ratio:>11} {over_ratio:>17}");
    }
    println!("  limits after the run (calls came one at a time)");
    v.print_limits();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

criterion_group!(benches, allocations, happy_path_group, overhead);
criterion_main!(benches);
