//! What the whole standard stack costs a call on its happy path, against the bare service, in
//! one run: `cargo bench -p tollgate --bench stack`.
//!
//! Around a service that answers at once with a small chat completion (so what is measured is
//! the stack's own work), each iteration is `poll_ready`, `call` and the response future, each
//! polled once with a no-op waker inside a tokio runtime context, then the body read to its end
//! and the response dropped. The request is a 300-byte chat completion with an API key, not
//! cacheable (no temperature 0), so every layer runs: Annotate parses it, the cache and the
//! batcher pass it on, retry, breaker, overload, rate limit (no quota set: learning from
//! headers), concurrency limit, timeout and classify each do their part.
//!
//! Three more variants put the stack next to what a tower user would build without Tollgate:
//!
//! - `tower_builtins`: tower's own `RateLimit`, `Retry` (a policy that retries errors, cloning
//!   each request up front), `ConcurrencyLimit` and `Timeout`, outermost first. Tower's
//!   `RateLimit` is not `Clone` and `Retry` needs a `Clone` service below it, so the rate limit
//!   goes outside the retry (the other way round needs a `Buffer`, whose worker task no
//!   single-poll bench can drive).
//! - `tollgate_same_layers`: Tollgate's layers for the same four concerns, Annotate and Classify
//!   around them (they need the parsed request and the classified response): Annotate → Retry →
//!   RateLimit → ConcurrencyLimit → Timeout → Classify.
//!
//! First the allocations per call in steady state, then criterion's measure, then the
//! interleaved medians with each variant's overhead over `bare` and against `tower_builtins`.

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::time::Duration;

use tollgate::concurrency::ConcurrencyLimitLayer;
use tollgate::core::annotate::AnnotateLayer;
use tollgate::core::classify::ClassifyLayer;
use tollgate::ratelimit::{Quotas, RateLimitLayer};
use tollgate::retry::RetryLayer;
use tollgate::timeout::{TimeoutConfig, TimeoutLayer};
use tollgate::{LlmBody, LlmService, LlmStack, StackConfig};
use tollgate_testkit::requests::{chat_completion_request, small_completion};
use tollgate_testkit::{Comparison, runtime};
use tower::retry::Policy;
use tower::util::BoxService;
use tower::util::ServiceFn;
use tower::{ServiceBuilder, ServiceExt, service_fn};

// Counts allocations (why `stats_alloc`: `tollgate_testkit::alloc`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The limits of the same-concern stacks: never reached (a call at a time, a huge quota).
const CONCURRENCY: usize = 64;
const HUGE: u64 = 1_000_000_000_000_000;
const MINUTE: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(60);
const BATCH: usize = 500;
const ROUNDS: usize = 100;

type Respond = fn(Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// Tower's retry policy at its smallest: retries errors (a few times), never a response.
#[derive(Clone, Debug)]
struct RetryErrors {
    remaining: u32,
}

impl<Res, E> Policy<Request<Full<Bytes>>, Res, E> for RetryErrors {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        result: &mut Result<Res, E>,
    ) -> Option<Ready<()>> {
        if result.is_ok() || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(ready(()))
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        Some(request.clone())
    }
}

/// A stack's service, its types erased (one box per call, in every variant that has it).
type Boxed<B> = BoxService<Request<Full<Bytes>>, Response<B>, tollgate_core::BoxError>;

/// Tower's built-ins for the same concerns: rate limit, retry, concurrency limit, timeout.
fn tower_builtins() -> Boxed<Full<Bytes>> {
    let service = ServiceBuilder::new()
        .rate_limit(HUGE, MINUTE)
        .retry(RetryErrors { remaining: 4 })
        .concurrency_limit(CONCURRENCY)
        .timeout(DEADLINE)
        .service(service_fn(small_completion as Respond));
    BoxService::new(service)
}

/// Tollgate's layers for the same concerns, between Annotate and Classify.
fn tollgate_same_layers() -> Boxed<LlmBody> {
    let timeout = TimeoutLayer::new(TimeoutConfig::default()).expect("the defaults are valid");
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(RetryLayer::new())
        .layer(RateLimitLayer::new(Quotas::per_minute(HUGE, HUGE)))
        .layer(ConcurrencyLimitLayer::new(CONCURRENCY))
        .layer(timeout)
        .layer(ClassifyLayer::new())
        .service(service_fn(small_completion as Respond));
    // The same boxed body as the standard stack's.
    let service = ServiceExt::<Request<Full<Bytes>>>::map_response(service, |response| {
        response.map(|body| body.map_err(Into::into).boxed_unsync())
    });
    BoxService::new(ServiceExt::<Request<Full<Bytes>>>::map_err(
        service,
        Into::into,
    ))
}

struct Variants {
    bare: ServiceFn<Respond>,
    tower_builtins: Boxed<Full<Bytes>>,
    tollgate_same_layers: Boxed<LlmBody>,
    stack: LlmService,
}

impl Variants {
    fn new() -> Self {
        let bare = service_fn(small_completion as Respond);
        let config =
            StackConfig::from_toml("preset = \"balanced\"\nmax_concurrent_requests = 64\nseed = 1")
                .expect("a valid config");
        let client = ServiceBuilder::new()
            .map_err(|never: Infallible| -> tollgate_core::BoxError { match never {} })
            .service(bare);
        let (stack, _handle) = LlmStack::new(&config)
            .expect("a valid config")
            .service(client);
        let mut variants = Self {
            bare,
            tower_builtins: tower_builtins(),
            tollgate_same_layers: tollgate_same_layers(),
            stack,
        };
        variants.comparison().warm_up();
        variants
    }

    fn comparison(&mut self) -> Comparison<'_> {
        Comparison::new()
            .drained("bare", &mut self.bare, chat_completion_request)
            .drained(
                "tower_builtins",
                &mut self.tower_builtins,
                chat_completion_request,
            )
            .drained(
                "tollgate_same_layers",
                &mut self.tollgate_same_layers,
                chat_completion_request,
            )
            .drained("standard_stack", &mut self.stack, chat_completion_request)
    }
}

fn allocations(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("allocations per call in steady state (the inner service's own included)");
    Variants::new()
        .comparison()
        .print_allocations(GLOBAL, "stack");
}

fn group(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("stack");
    Variants::new().comparison().bench(&mut group);
    group.finish();
}

fn overhead(_: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    println!("\noverhead over bare: medians of {ROUNDS} interleaved batches of {BATCH} calls");
    let medians = Variants::new().comparison().medians(ROUNDS, BATCH);
    println!("  stack");
    medians.print("tower_builtins");
}

criterion_group!(benches, allocations, group, overhead);
criterion_main!(benches);
