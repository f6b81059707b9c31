//! The concurrency and overload layers against the simulator over real loopback HTTP, with
//! real SSE streams: a permit is held until a stream's last byte, and the adaptive limit finds
//! a hidden capacity of 8 with streamed answers. Paused time, as in `ratelimit.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::time::Instant;
use tollgate_concurrency::ConcurrencyLimitLayer;
use tollgate_core::BoxError;
use tollgate_core::Provider;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_overload::OverloadLayer;
use tollgate_sim::{Sim, SimConfig, SimHandle};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

type Stack = BoxCloneService<
    http::Request<Full<Bytes>>,
    http::Response<http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>>,
    BoxError,
>;

/// A simulator answering streams of 40 tokens (100 ms to the first, 5 ms each after), with a
/// hidden capacity of 8 streams in flight (529 beyond).
async fn sim() -> SimHandle {
    Sim::start(
        SimConfig::from_toml(
            "seed = 4\n[latency]\ntime_to_first_token = \"100ms\"\nper_output_token = \"5ms\"\n\
             [output]\nmin_tokens = 40\nmax_tokens = 40\n[faults]\ncapacity = 8\noverload_status = 529\n",
        )
        .unwrap(),
    )
    .await
    .unwrap()
}

/// Type-erases a stack (bodies boxed), so its calls can be spawned.
fn erase<S, B>(service: S) -> Stack
where
    S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneService::new(
        service
            .map_err(Into::into)
            .map_response(|r: http::Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync())),
    )
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http::<Full<Bytes>>()
}

/// `callers` callers, each streaming `each` chat completions one after another; returns how
/// many were answered 529. Panics on any other failure.
async fn run(sim: &SimHandle, stack: &Stack, callers: usize, each: usize) -> u64 {
    let overloaded = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let stack = stack.clone();
            let overloaded = overloaded.clone();
            let url = format!("{}/v1/chat/completions", sim.url());
            tokio::spawn(async move {
                for _ in 0..each {
                    let body = json!({"model": "gpt-4o-mini", "max_tokens": 40, "stream": true,
                        "messages": [{"role": "user", "content": "stream please"}]});
                    let request = http::Request::post(&url)
                        .header("authorization", "Bearer sk-stream")
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .unwrap();
                    let response = stack.clone().oneshot(request).await.expect("an answer");
                    match response.status().as_u16() {
                        200 => {}
                        529 => {
                            overloaded.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected status {other}"),
                    }
                    let body = response.into_body().collect().await.expect("a whole body");
                    assert!(!body.to_bytes().is_empty());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    overloaded.load(Ordering::Relaxed)
}

#[tokio::test(start_paused = true)]
async fn a_permit_is_held_until_the_streams_last_byte() {
    let sim = sim().await;
    let stack = erase(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
            .layer(ConcurrencyLimitLayer::new(5))
            .layer(ClassifyLayer::new())
            .service(client()),
    );
    let overloaded = run(&sim, &stack, 32, 5).await;
    let stats = sim.stats();
    println!(
        "160 streams through a limit of 5: at most {} in flight at the simulator",
        stats.max_in_flight
    );
    assert_eq!(overloaded, 0, "never above the capacity of 8");
    assert_eq!(
        stats.max_in_flight, 5,
        "the limit held for the whole of every stream"
    );
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_finds_the_capacity_with_streams() {
    let sim = sim().await;
    let overload = OverloadLayer::new();
    let handle = overload.handle();
    let stack = erase(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
            .layer(overload)
            .layer(ClassifyLayer::new())
            .service(client()),
    );
    let start = Instant::now();
    let overloaded = run(&sim, &stack, 32, 20).await;
    let stats = sim.stats();
    let limit = handle.snapshot()[0].limit;
    let share = overloaded as f64 / stats.received as f64;
    println!(
        "640 streams in {:.1} s: limit {limit}, {overloaded} of {} answered 529 ({:.2} %)",
        start.elapsed().as_secs_f64(),
        stats.received,
        share * 100.0
    );
    assert!((6..=10).contains(&limit), "limit {limit}");
    assert!(share < 0.05, "{:.2} % answered 529", share * 100.0);
    assert!(start.elapsed() < Duration::from_secs(60));
}
