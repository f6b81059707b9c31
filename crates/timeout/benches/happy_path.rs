//! What the timeout layer costs a call that never times out, side by side with its peers, in
//! one run: `cargo bench -p tollgate-timeout --bench happy_path`.
//!
//! Around a service that answers at once with a small body (so what is measured is the
//! layers' own work), each iteration is `poll_ready`, `call` and the response future, each
//! polled once with a no-op waker inside a tokio runtime context, then the body read to its end
//! and the response dropped (Tollgate's body watches idle time and the total deadline until its
//! end, so its work is not over before that):
//!
//! - `timeout_happy_path`: through nothing (`bare`), through tower's `TimeoutLayer` (`tower`,
//!   a deadline on the response future only), through tower-resilience's `TimeLimiterLayer`
//!   (`tower_resilience`, the same, in a boxed future), and through
//!   [`TimeoutLayer`] with its defaults (`tollgate`: first byte for streams, idle between
//!   chunks, and a total that grows with `max_tokens`, on the future and on the body).
//!
//! First the run prints allocations per call in steady state, then criterion's measure, then
//! each variant's time per call, its overhead over `bare`, and both against tower's, from
//! interleaved batches (so that a drift of the machine touches every variant alike).

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate_testkit::{Comparison, runtime};
use tollgate_timeout::{TimeoutConfig, TimeoutLayer};
use tower::util::ServiceFn;
use tower::{Layer, service_fn};
use tower_resilience_timelimiter::{FixedTimeout, TimeLimiter, TimeLimiterLayer};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The peers' deadline: never reached.
const DEADLINE: Duration = Duration::from_secs(60);
/// What the inner service answers (static: making it allocates nothing).
const BODY: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#;
/// Calls per batch in the overhead summary.
const BATCH: usize = 2_000;
/// Batches per variant in the overhead summary.
const ROUNDS: usize = 200;

type Respond = fn(Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;
type Inner = ServiceFn<Respond>;

/// A 200 with a small body.
fn respond(_: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(BODY)))))
}

/// Requests with no extensions: making them allocates nothing.
fn requests() -> impl FnMut() -> Request<()> {
    || Request::new(())
}

/// tower-resilience's time limiter, with one deadline for every request.
type PeerService = TimeLimiter<Inner, FixedTimeout>;

/// Every variant, around the same inner service.
struct Variants {
    bare: Inner,
    tower: tower::timeout::Timeout<Inner>,
    tower_resilience: PeerService,
    tollgate: tollgate_timeout::Timeout<Inner>,
}

impl Variants {
    /// Built and run once each.
    fn new() -> Self {
        let inner = service_fn(respond as Respond);
        let peer = TimeLimiterLayer::builder()
            .timeout_duration(DEADLINE)
            .cancel_running_future(true)
            .build();
        let tollgate = TimeoutLayer::new(TimeoutConfig::default()).expect("the defaults are valid");
        let mut variants = Self {
            bare: inner,
            tower: tower::timeout::TimeoutLayer::new(DEADLINE).layer(inner),
            tower_resilience: peer.layer(inner),
            tollgate: tollgate.layer(inner),
        };
        variants.comparison().warm_up();
        variants
    }

    /// Every variant, in the summaries' order, `bare` first; a call reads the body to its end
    /// and drops the response.
    fn comparison(&mut self) -> Comparison<'_> {
        Comparison::new()
            .drained("bare", &mut self.bare, requests())
            .drained("tower", &mut self.tower, requests())
            .drained("tower_resilience", &mut self.tower_resilience, requests())
            .drained("tollgate", &mut self.tollgate, requests())
    }
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the inner service's own included)");
    Variants::new()
        .comparison()
        .print_allocations(GLOBAL, "timeout_happy_path");
}

fn happy_path_group(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("timeout_happy_path");
    Variants::new().comparison().bench(&mut group);
    group.finish();
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    let medians = Variants::new().comparison().medians(ROUNDS, BATCH);
    println!("  timeout_happy_path");
    medians.print("tower");
}

criterion_group!(benches, allocations, happy_path_group, overhead);
criterion_main!(benches);
