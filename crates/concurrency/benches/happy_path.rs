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
//!   `ConcurrencyLimitLayer::new(64)` (`tower`), through tower-resilience's bulkhead of 64 in
//!   backpressure mode, which like tower's takes its permit in `poll_ready`
//!   (`tower_resilience`), through
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
use std::future::{Ready, ready};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate_concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer, Priority};
use tollgate_testkit::{Comparison, roundtrip_drained, runtime};
use tower::util::ServiceFn;
use tower::{Layer, service_fn};
use tower_resilience_bulkhead::{Bulkhead, BulkheadLayer};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
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
    tower_resilience: Bulkhead<Inner>,
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
            tower_resilience: BulkheadLayer::builder()
                .max_concurrent_calls(LIMIT)
                .backpressure()
                .build()
                .expect("a valid bulkhead")
                .layer(inner),
            tollgate: tollgate_layer.layer(inner),
            tollgate_layer,
            partitioned: partitioned_layer.layer(inner),
            partitioned_layer,
        };
        variants.comparison().warm_up();
        let read = roundtrip_drained(&mut variants.tollgate, requests()());
        assert_eq!(read, BODY.len(), "the body is read to its end");
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

    /// Every variant, in the summaries' order, `bare` first; a call reads the body to its end
    /// (which gives Tollgate's permit back) and drops the response.
    fn comparison(&mut self) -> Comparison<'_> {
        Comparison::new()
            .drained("bare", &mut self.bare, requests())
            .drained("tower", &mut self.tower, requests())
            .drained("tower_resilience", &mut self.tower_resilience, requests())
            .drained("tollgate", &mut self.tollgate, requests())
            .drained("tollgate_partitioned", &mut self.partitioned, requests())
    }
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the inner service's own included)");
    let mut v = Variants::new();
    v.comparison()
        .print_allocations(GLOBAL, "concurrency_happy_path");
    v.assert_permits_back();
}

fn happy_path_group(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("concurrency_happy_path");
    let mut v = Variants::new();
    // Requests are made outside the timing (they allocate nothing anyway); the body is read
    // and the response dropped inside it, as the permit must be back before the next call.
    v.comparison().bench(&mut group);
    v.assert_permits_back();
    group.finish();
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    let mut v = Variants::new();
    let medians = v.comparison().medians(ROUNDS, BATCH);
    v.assert_permits_back();
    println!("  concurrency_happy_path");
    medians.print("tower");
}

criterion_group!(benches, allocations, happy_path_group, overhead);
criterion_main!(benches);
