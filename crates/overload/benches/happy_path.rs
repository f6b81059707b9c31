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
//! Every scope is asserted to have nothing in flight after each benchmark, and its detector
//! state is printed when it is not Normal: the detector reads real time here, and on a busy
//! machine a descheduled batch of calls can look slow enough to it to leave Normal (Warning or
//! Recovering change nothing on this path for interactive requests, which is all it sees).

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate_concurrency::Priority;
use tollgate_core::{Provider, Scope};
use tollgate_overload::{Gradient, Overload, OverloadHandle, OverloadLayer, OverloadState};
use tollgate_testkit::{
    Comparison, chat_annotation, chat_requests, requests_with, roundtrip_drained, runtime,
};
use tower::util::ServiceFn;
use tower::{Layer, service_fn};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
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

/// The scope requests without an [`LlmRequest`](tollgate_core::LlmRequest) fall to.
fn default_scope() -> Scope {
    Scope::new(Provider::OpenAiCompatible)
}

/// Makes requests without an [`LlmRequest`](tollgate_core::LlmRequest), carrying the default
/// priority instead.
fn unannotated_requests() -> impl FnMut() -> Request<()> {
    requests_with(Priority::Interactive)
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
        variants.comparison().warm_up();
        let read = roundtrip_drained(&mut variants.aimd, chat_requests()());
        assert_eq!(read, BODY.len(), "the body is read to its end");
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

    /// Every call ended and gave its permit back; a detector that left Normal is reported.
    fn assert_normal(&self) {
        for (name, handle, scope) in self.handles() {
            assert!(handle.limit(&scope).is_some(), "{name}: the scope exists");
            assert_eq!(handle.in_flight(&scope), 0, "{name}: nothing in flight");
            let state = handle.state(&scope);
            if state != OverloadState::Normal {
                println!(
                    "  note: {name}'s detector is {state:?} (real-time latency on a busy machine)"
                );
            }
            assert_eq!(handle.snapshot().len(), 1, "{name}: one scope");
        }
    }

    /// Every variant, in the summaries' order, `bare` first; a call reads the body to its end
    /// (which gives Tollgate's permit back) and drops the response.
    fn comparison(&mut self) -> Comparison<'_> {
        Comparison::new()
            .drained("bare", &mut self.bare, chat_requests())
            .drained("tower", &mut self.tower, chat_requests())
            .drained("tollgate_aimd", &mut self.aimd, chat_requests())
            .drained(
                "tollgate_aimd_unannotated",
                &mut self.unannotated,
                unannotated_requests(),
            )
            .drained(
                "tollgate_aimd_no_throttle",
                &mut self.no_throttle,
                chat_requests(),
            )
            .drained("tollgate_gradient", &mut self.gradient, chat_requests())
    }

    fn print_limits(&self) {
        for (name, handle, scope) in self.handles() {
            let limit = handle.limit(&scope).unwrap_or_default();
            println!("    {name:<27} limit {limit}");
        }
    }
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the inner service's own included)");
    let mut v = Variants::new();
    v.comparison()
        .print_allocations(GLOBAL, "overload_happy_path");
    v.assert_normal();
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
    v.comparison().bench(&mut group);
    v.assert_normal();
    group.finish();
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    let mut v = Variants::new();
    let medians = v.comparison().medians(ROUNDS, BATCH);
    v.assert_normal();
    println!("  overload_happy_path");
    medians.print("tower");
    println!("  limits after the run (calls came one at a time)");
    v.print_limits();
}

criterion_group!(benches, allocations, happy_path_group, overhead);
criterion_main!(benches);
