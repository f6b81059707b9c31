//! What the concurrency limit costs a call that never waits, side by side with tower's
//! `ConcurrencyLimit`, in one run.
//!
//! `cargo bench -p tollgate-concurrency --bench happy_path`. Around a service that answers at
//! once with a small body (so what is measured is the limits' own work), each iteration is
//! `poll_ready`, `call` and the response future, each polled once with a no-op waker inside a
//! tokio runtime context, then the body read to its end and the response dropped, so that the
//! permit is back before the next call (Tollgate's body holds it until its end; tower's future
//! gives it back when it completes). The limit is 64 and calls come one at a time, so no call
//! ever waits:
//!
//! - `concurrency_happy_path`: through nothing (`bare`), through tower's
//!   `ConcurrencyLimitLayer::new(64)` (`tower`), through
//!   [`ConcurrencyLimitLayer::new(64)`](ConcurrencyLimitLayer::new) (`tollgate`), and through
//!   the same split 90 % / 10 % with
//!   [`with_partitions`](ConcurrencyLimitLayer::with_partitions) (`tollgate_partitioned`; the
//!   requests carry no [`Priority`], so they draw on the interactive share).
//!
//! First the run prints allocations per call in steady state, counted by a global allocator
//! wrapper. Last it prints each variant's time per call, its overhead over `bare`, and both
//! against tower's, measured apart from criterion: the variants in turn, batch after batch, so
//! that a drift of the machine touches them all alike; the medians of the batches are shown.
//!
//! Every permit is asserted back after each benchmark.

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
use tollgate_concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer, Priority};
use tower::util::ServiceFn;
use tower::{Layer, Service, service_fn};

// The workspace forbids unsafe code, even in benches, and a `GlobalAlloc` needs an `unsafe
// impl`: `stats_alloc` is that wrapper (atomic counters around `System`), and nothing more.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The limit of every variant: never reached, calls come one at a time.
const LIMIT: usize = 64;
/// The interactive share of the partitioned variant.
const INTERACTIVE_SHARE: f64 = 0.9;
/// What the inner service answers (static: making it allocates nothing).
const BODY: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#;
/// Calls per batch in the overhead summary.
const BATCH: usize = 2_000;
/// Batches per variant in the overhead summary.
const ROUNDS: usize = 300;

type Respond = fn(Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;
type Inner = ServiceFn<Respond>;

/// A 200 with a small body.
fn respond(_: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(BODY)))))
}

/// Requests with no extensions (so interactive): making them allocates nothing.
fn requests() -> impl FnMut() -> Request<()> {
    || Request::new(())
}

/// Every variant, around the same inner service.
struct Variants {
    bare: Inner,
    tower: tower::limit::ConcurrencyLimit<Inner>,
    tollgate: ConcurrencyLimit<Inner>,
    tollgate_layer: ConcurrencyLimitLayer,
    partitioned: ConcurrencyLimit<Inner>,
    partitioned_layer: ConcurrencyLimitLayer,
}

impl Variants {
    /// Built and run once each.
    fn new() -> Self {
        let inner = service_fn(respond as Respond);
        let tollgate_layer = ConcurrencyLimitLayer::new(LIMIT);
        let partitioned_layer =
            ConcurrencyLimitLayer::new(LIMIT).with_partitions(INTERACTIVE_SHARE);
        let mut variants = Self {
            bare: inner,
            tower: tower::limit::ConcurrencyLimitLayer::new(LIMIT).layer(inner),
            tollgate: tollgate_layer.layer(inner),
            tollgate_layer,
            partitioned: partitioned_layer.layer(inner),
            partitioned_layer,
        };
        let mut requests = requests();
        happy_path(&mut variants.bare, requests());
        happy_path(&mut variants.tower, requests());
        happy_path(&mut variants.tollgate, requests());
        happy_path(&mut variants.partitioned, requests());
        variants.assert_permits_back();
        variants
    }

    /// Every permit is free again: each call gave its own back.
    fn assert_permits_back(&self) {
        let interactive = Priority::Interactive;
        assert_eq!(self.tollgate_layer.available(interactive), LIMIT);
        let (share, _) = self.partitioned_layer.sizes();
        assert_eq!(self.partitioned_layer.available(interactive), share);
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
fn allocations_per_call<S, B>(service: &mut S) -> f64
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    const CALLS: usize = 10_000;
    let mut requests = requests();
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
        ("bare", allocations_per_call(&mut v.bare)),
        ("tower", allocations_per_call(&mut v.tower)),
        ("tollgate", allocations_per_call(&mut v.tollgate)),
        (
            "tollgate_partitioned",
            allocations_per_call(&mut v.partitioned),
        ),
    ];
    v.assert_permits_back();
    for (name, per_call) in rows {
        println!(
            "  {:<45} {per_call:>6.2}",
            format!("concurrency_happy_path/{name}")
        );
    }
}

fn happy_path_group(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("concurrency_happy_path");
    let mut v = Variants::new();
    // Requests are made outside the timing (they allocate nothing anyway); the body is read
    // and the response dropped inside it, as the permit must be back before the next call.
    let small = BatchSize::SmallInput;
    group.bench_function("bare", |b| {
        b.iter_batched(requests(), |r| happy_path(&mut v.bare, r), small)
    });
    group.bench_function("tower", |b| {
        b.iter_batched(requests(), |r| happy_path(&mut v.tower, r), small)
    });
    group.bench_function("tollgate", |b| {
        b.iter_batched(requests(), |r| happy_path(&mut v.tollgate, r), small)
    });
    group.bench_function("tollgate_partitioned", |b| {
        b.iter_batched(requests(), |r| happy_path(&mut v.partitioned, r), small)
    });
    v.assert_permits_back();
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
    let mut requests = requests();
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        samples[0].push(batch(&mut v.bare, &mut requests));
        samples[1].push(batch(&mut v.tower, &mut requests));
        samples[2].push(batch(&mut v.tollgate, &mut requests));
        samples[3].push(batch(&mut v.partitioned, &mut requests));
    }
    v.assert_permits_back();
    let [bare, tower, tollgate, partitioned] = samples.map(median);
    println!("  concurrency_happy_path");
    println!(
        "    {:<22} {:>9} {:>9} {:>11} {:>17}",
        "", "ns/call", "overhead", "vs tower", "overhead vs tower"
    );
    let tower_overhead = tower - bare;
    for (name, ns) in [
        ("bare", bare),
        ("tower", tower),
        ("tollgate", tollgate),
        ("tollgate_partitioned", partitioned),
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
        println!("    {name:<22} {ns:>9.1} {over:>9.1} {ratio:>11} {over_ratio:>17}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

criterion_group!(benches, allocations, happy_path_group, overhead);
criterion_main!(benches);
