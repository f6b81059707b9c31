//! What a closed circuit costs a call, side by side with tower-resilience's breaker, in one run.
//!
//! `cargo bench -p tollgate-circuit --bench closed_path`. Around a service that answers at once
//! (so what is measured is the breakers' own work), each iteration is `poll_ready`, `call` and
//! the response future, each polled once with a no-op waker inside a tokio runtime context:
//!
//! - `closed_path`: the inner service's response carries an [`Outcome`], as it does under
//!   `ClassifyLayer`; through nothing (`bare`), through [`CircuitBreakerLayer::shared`], through
//!   [`CircuitBreakerLayer::new`] (one circuit per scope, so the scope of the request's
//!   [`LlmRequest`] is looked up on every call), through the shared circuit in
//!   [`Mode::Disabled`] (the layer's plumbing without the admission and the window), and
//!   through tower-resilience's `CircuitBreakerLayer` with the same trip rule: failure rate
//!   50 % over the last 20 calls, at least 10 calls;
//! - `closed_path_unclassified`: the same without the `Outcome`, so that Tollgate classifies the
//!   200 itself;
//! - `clock`: one read of `tokio::time::Instant::now()` (the bench build has tokio's
//!   `test-util`, as every dev build of the crate does, which adds a look for a paused clock) and
//!   of `std::time::Instant::now()`: Tollgate reads the clock three times per call.
//!
//! The breaker on its own (`Breaker::admit` and `Permit::record`) is crate-private, so it has
//! no group of its own here.
//!
//! First the run prints allocations per call in steady state (the scope's circuit exists, the
//! services have run), counted by a global allocator wrapper. Last it prints each variant's
//! time per call, its overhead over `bare`, and both against tower-resilience's (the target is
//! an overhead ratio of 0.5 or less), measured apart from criterion: the variants in turn,
//! batch after batch, so that a drift of the machine touches them all alike; the medians of the
//! batches are shown.
//!
//! Every circuit is asserted closed after its benchmark: every call succeeds.

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate_circuit::{
    CircuitBreaker, CircuitBreakerLayer, CircuitConfig, CircuitHandle, CircuitState, DefaultPolicy,
    Mode,
};
use tollgate_core::Outcome;
use tollgate_testkit::{Comparison, chat_annotation, chat_requests, roundtrip, runtime};
use tower::util::ServiceFn;
use tower::{Layer, service_fn};
use tower_resilience_circuitbreaker::{
    CircuitBreaker as PeerBreaker, CircuitBreakerLayer as PeerLayer, CircuitState as PeerState,
    DefaultClassifier, SlidingWindowType,
};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Calls per batch in the overhead summary.
const BATCH: usize = 2_000;
/// Batches per variant in the overhead summary.
const ROUNDS: usize = 300;

type Respond = fn(Request<()>) -> Ready<Result<Response<()>, Infallible>>;
type Tollgate = CircuitBreaker<ServiceFn<Respond>, DefaultPolicy>;

/// A success, classified as `ClassifyLayer` would.
fn respond_classified(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    let mut response = Response::new(());
    response.extensions_mut().insert(Outcome::success());
    ready(Ok(response))
}

/// A bare 200.
fn respond_plain(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}

/// The peer with the trip rule of `CircuitConfig::default()`'s failure rate.
fn peer_layer() -> PeerLayer {
    PeerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_type(SlidingWindowType::CountBased)
        .sliding_window_size(20)
        .minimum_number_of_calls(10)
        .wait_duration_in_open(Duration::from_secs(30))
        .permitted_calls_in_half_open(3)
        .build()
        .unwrap()
}

/// Every variant, around the same inner service.
struct Variants {
    bare: ServiceFn<Respond>,
    shared: Tollgate,
    shared_handle: CircuitHandle,
    per_scope: Tollgate,
    per_scope_handle: CircuitHandle,
    disabled: Tollgate,
    peer: PeerBreaker<ServiceFn<Respond>, DefaultClassifier>,
}

impl Variants {
    /// Built and run once each, so that the scope's circuit exists.
    fn new(respond: Respond) -> Self {
        let inner = service_fn(respond);
        let shared = CircuitBreakerLayer::shared(CircuitConfig::default()).unwrap();
        let per_scope = CircuitBreakerLayer::new(CircuitConfig::default()).unwrap();
        let disabled = CircuitConfig {
            mode: Mode::Disabled,
            ..CircuitConfig::default()
        };
        let mut variants = Self {
            bare: inner,
            shared: shared.layer(inner),
            shared_handle: shared.handle(),
            per_scope: per_scope.layer(inner),
            per_scope_handle: per_scope.handle(),
            disabled: CircuitBreakerLayer::shared(disabled).unwrap().layer(inner),
            peer: peer_layer().layer(inner),
        };
        variants.comparison().warm_up();
        variants.assert_closed();
        variants
    }

    fn assert_closed(&self) {
        let scope = chat_annotation().scope();
        assert_eq!(self.shared_handle.state(&scope), CircuitState::Closed);
        assert_eq!(self.per_scope_handle.state(&scope), CircuitState::Closed);
        let created = self.per_scope_handle.metrics(&scope);
        assert!(created.is_some(), "the scope's circuit exists");
        assert_eq!(self.peer.state_sync(), PeerState::Closed);
    }

    /// Every variant, in the summaries' order, `bare` first.
    fn comparison(&mut self) -> Comparison<'_> {
        Comparison::new()
            .call("bare", &mut self.bare, chat_requests())
            .call("tollgate_shared", &mut self.shared, chat_requests())
            .call("tollgate_per_scope", &mut self.per_scope, chat_requests())
            .call("tollgate_disabled", &mut self.disabled, chat_requests())
            .call("tower_resilience", &mut self.peer, chat_requests())
    }
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the inner service's own included)");
    for (group, respond) in groups() {
        let mut v = Variants::new(respond);
        v.comparison().print_allocations(GLOBAL, group);
        v.assert_closed();
    }
}

fn groups() -> [(&'static str, Respond); 2] {
    [
        ("closed_path", respond_classified as Respond),
        ("closed_path_unclassified", respond_plain as Respond),
    ]
}

fn closed_path(c: &mut Criterion) {
    // tower-resilience's future takes a tokio mutex; Tollgate reads tokio's clock.
    let rt = runtime();
    let _guard = rt.enter();
    for (group_name, respond) in groups() {
        let mut group = c.benchmark_group(group_name);
        let mut v = Variants::new(respond);
        // Requests are made outside the timing; dropping them inside is the same for every
        // variant (the inner service drops them).
        let small = BatchSize::SmallInput;
        group.bench_function("bare", |b| {
            b.iter_batched(chat_requests(), |r| roundtrip(&mut v.bare, r), small)
        });
        group.bench_function("tollgate_shared", |b| {
            b.iter_batched(chat_requests(), |r| roundtrip(&mut v.shared, r), small)
        });
        group.bench_function("tollgate_per_scope", |b| {
            b.iter_batched(chat_requests(), |r| roundtrip(&mut v.per_scope, r), small)
        });
        if group_name == "closed_path" {
            group.bench_function("tollgate_disabled", |b| {
                b.iter_batched(chat_requests(), |r| roundtrip(&mut v.disabled, r), small)
            });
        }
        group.bench_function("tower_resilience", |b| {
            b.iter_batched(chat_requests(), |r| roundtrip(&mut v.peer, r), small)
        });
        v.assert_closed();
        group.finish();
    }
}

fn clock(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("clock");
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    group.bench_function("std_instant_now", |b| b.iter(std::time::Instant::now));
    group.finish();
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    for (group, respond) in groups() {
        let mut v = Variants::new(respond);
        // Each response is dropped after the timing, as criterion's `iter_batched` does.
        let medians = v.comparison().medians(ROUNDS, BATCH);
        v.assert_closed();
        println!("  {group}");
        medians.print("tower_resilience");
    }
    println!("  target: tollgate's overhead at most 0.5 of tower-resilience's");
}

criterion_group!(benches, allocations, closed_path, clock, overhead);
criterion_main!(benches);
