//! `TimeoutLayer` against tollgate-sim over real loopback HTTP (a hyper-util client), paused
//! time: a server that never sends headers (the simulator's hang mode), and a stream whose next
//! token is slower than the idle limit, so it stops after its first chunks.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::{ClassifyLayer, classify_error};
use tollgate_core::{OutcomeKind, Provider};
use tollgate_sim::{Sim, SimConfig, SimHandle};
use tollgate_timeout::error::{FirstByteTimeout, IdleTimeout, Limit};
use tollgate_timeout::{TimeoutConfig, TimeoutLayer};
use tower::{ServiceBuilder, ServiceExt};

use common::{failed_with_timeout, read_observed};

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

fn config() -> TimeoutConfig {
    TimeoutConfig {
        first_byte: Some(Duration::from_secs(5)),
        idle: Some(Duration::from_secs(3)),
        total: Some(Duration::from_secs(20)),
        per_output_token: Some(Duration::from_millis(100)),
        default_output_tokens: 1_000,
    }
}

async fn sim(toml: &str) -> SimHandle {
    Sim::start(SimConfig::from_toml(toml).expect("a valid scenario"))
        .await
        .expect("the simulator starts")
}

fn chat(sim: &SimHandle, stream: bool, max_tokens: u32) -> http::Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"stream":{stream},"messages":[{{"role":"user","content":"Hello"}}]}}"#
    );
    http::Request::post(format!("{}/v1/chat/completions", sim.url()))
        .header("authorization", "Bearer sk-loopback")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request")
}

/// Lets the simulator notice the closed connection.
async fn settle(sim: &SimHandle) -> u64 {
    for _ in 0..100 {
        if sim.stats().in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.stats().in_flight
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_sends_headers_times_out_and_is_hung_up_on() {
    let sim = sim("[faults]\nhang_rate = 1.0\n").await;
    let llm = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        .layer(TimeoutLayer::new(config()).unwrap())
        .layer(ClassifyLayer::new())
        .service(client());

    // A stream: the first-byte limit; not a stream: its total, 20 s + 100 ms × 50 tokens.
    for (stream, max_tokens, limit, after) in [
        (true, 100, Limit::FirstByte, 5),
        (false, 50, Limit::Total, 25),
    ] {
        let start = Instant::now();
        let error = llm
            .clone()
            .oneshot(chat(&sim, stream, max_tokens))
            .await
            .unwrap_err();
        let waited = start.elapsed();
        let timeout = error
            .downcast_ref::<FirstByteTimeout>()
            .unwrap_or_else(|| panic!("a FirstByteTimeout, not {error}"));
        assert_eq!(timeout.limit, limit);
        let after = Duration::from_secs(after);
        assert!(
            (after..after + Duration::from_millis(50)).contains(&waited),
            "{waited:?}"
        );
        assert_eq!(classify_error(error.as_ref()).kind, OutcomeKind::Timeout);
    }

    let stats = sim.stats();
    assert_eq!(
        stats.hung, 2,
        "both requests reached the simulator and hung"
    );
    assert_eq!(settle(&sim).await, 0, "the hung requests were hung up on");
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stops_after_its_first_chunks_ends_with_an_idle_timeout() {
    // The role chunk and the first token come at once; every later token takes 60 s.
    let sim = sim(
        "[latency]\ntime_to_first_token = \"200ms\"\nper_output_token = \"60s\"\n\
         [output]\nmin_tokens = 8\nmax_tokens = 8\n",
    )
    .await;
    let llm = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        .layer(TimeoutLayer::new(config()).unwrap())
        .layer(ClassifyLayer::new())
        .service(client());
    let start = Instant::now();
    let response = llm.oneshot(chat(&sim, true, 8)).await.unwrap();
    assert_eq!(response.status(), 200);
    let (chunks, result, end) = read_observed(response).await;
    let received: Vec<u8> = chunks.concat();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("data: ").count(), 2, "{text}");
    assert!(text.contains(r#""role":"assistant""#));
    let error = result.unwrap_err();
    let idle = error
        .downcast_ref::<IdleTimeout>()
        .unwrap_or_else(|| panic!("an IdleTimeout, not {error}"));
    assert_eq!(idle.idle, Duration::from_secs(3));
    assert_eq!(idle.bytes, received.len() as u64);
    let elapsed = start.elapsed();
    assert!(
        (Duration::from_millis(3_200)..Duration::from_millis(3_250)).contains(&elapsed),
        "{elapsed:?}"
    );
    failed_with_timeout(&end);
    assert_eq!(settle(&sim).await, 0, "the stalled stream was hung up on");
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_the_simulator_stalls_for_good_ends_with_an_idle_timeout() {
    // `stream_stall_rate`: some tokens, then silence with no end.
    let sim = sim(
        "[latency]\ntime_to_first_token = \"200ms\"\nper_output_token = \"10ms\"\n\
         [output]\nmin_tokens = 40\nmax_tokens = 40\n[faults]\nstream_stall_rate = 1.0\n",
    )
    .await;
    let llm = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        .layer(TimeoutLayer::new(config()).unwrap())
        .layer(ClassifyLayer::new())
        .service(client());
    let response = llm.oneshot(chat(&sim, true, 40)).await.unwrap();
    assert_eq!(response.status(), 200);
    let (chunks, result, end) = read_observed(response).await;
    let text = String::from_utf8_lossy(&chunks.concat()).into_owned();
    assert!(
        text.matches("data: ").count() >= 2,
        "some tokens first: {text}"
    );
    assert!(!text.contains("[DONE]"), "never an end");
    let error = result.unwrap_err();
    assert!(error.is::<IdleTimeout>(), "an IdleTimeout, not {error}");
    failed_with_timeout(&end);
    assert_eq!(settle(&sim).await, 0, "the stalled stream was hung up on");
    assert_eq!(sim.stats().streams_stalled, 1);
    sim.shutdown().await;
}
