//! Two tenants through one `tollgate proxy` process in front of a `tollgate sim` process, over
//! loopback and in real time: the search team sends a steady five calls a second, first alone,
//! then beside a batch job flooding the gateway at twenty times its own limit. The search team
//! keeps its goodput and its latency (within 10 %); the batch job is held to its limits, and
//! every call over them is refused at once with a 429 its SDK does not retry.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use support::{Proxy, SimProcess, post, send};

const UPSTREAM: &str = "sk-tenants-9c1d";
const SEARCH: &str = "tg-search-5e20";
const BATCH: &str = "tg-batch-a713";

/// The search team's steady load: this many calls a second, for `RUN`.
const SEARCH_PER_SECOND: u32 = 5;
const RUN: Duration = Duration::from_secs(6);
/// The batch job's flood: this many calls a second (its limit is 10).
const FLOOD_PER_SECOND: u32 = 200;

/// One call: its status, `x-should-retry`, and how long it took.
struct Outcome {
    status: StatusCode,
    should_retry: Option<String>,
    took: Duration,
}

async fn chat(url: &str, key: &str, model: &str) -> Outcome {
    let auth = format!("Bearer {key}");
    let body = json!({"model": model, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Find the annual report."}]});
    let started = Instant::now();
    let answer = send(post(
        &format!("{url}/v1/chat/completions"),
        Some(("authorization", &auth)),
        &body,
    ))
    .await;
    Outcome {
        status: answer.status,
        should_retry: answer
            .headers
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        took: started.elapsed(),
    }
}

/// `per_second` calls a second of `key` to `model` for `RUN`, each started on time whatever
/// the others do (an open loop, as independent users are): every outcome.
async fn steady(
    url: String,
    key: &'static str,
    model: &'static str,
    per_second: u32,
) -> Vec<Outcome> {
    let mut calls = JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let count = per_second * RUN.as_secs() as u32;
    for _ in 0..count {
        ticks.tick().await;
        let url = url.clone();
        calls.spawn(async move { chat(&url, key, model).await });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = calls.join_next().await {
        outcomes.push(outcome.unwrap());
    }
    outcomes
}

/// Calls answered 200, a second; the median and mean latency of those.
fn summary(outcomes: &[Outcome]) -> (f64, Duration, Duration) {
    let mut ok: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.status == StatusCode::OK)
        .map(|o| o.took)
        .collect();
    ok.sort();
    assert!(!ok.is_empty(), "no call succeeded");
    let goodput = ok.len() as f64 / RUN.as_secs_f64();
    let mean = ok.iter().sum::<Duration>() / ok.len() as u32;
    (goodput, ok[ok.len() / 2], mean)
}

async fn upstream_requests(sim: &SimProcess) -> u64 {
    let stats = send(support::get(&format!("{}/sim/stats", sim.url)))
        .await
        .json();
    stats["keys"]["account"]["requests"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_flooding_tenant_the_other_keeps_its_goodput_and_latency() {
    // One account of 1,200 calls a minute; answers take 150 ms.
    let sim = SimProcess::start(&format!(
        "seed = 3\n[latency]\ntime_to_first_token = \"150ms\"\nper_output_token = \"0ms\"\n\
         tail_probability = 0.0\n[output]\nmin_tokens = 16\nmax_tokens = 16\n\
         [[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\nrequests_per_minute = 1200\n"
    ));
    // Each team may take half of it; the batch job at most eight calls at a time.
    let config = format!(
        r#"[stack]
preset = "balanced"
[[tenants]]
name = "search"
key_env = "TG_KEY_SEARCH"
requests_per_minute = 600
priority = "interactive"
models = ["chat"]
[[tenants]]
name = "batch"
key_env = "TG_KEY_BATCH"
requests_per_minute = 600
max_in_flight = 8
priority = "batch"
models = ["backfill"]
[[models]]
name = "chat"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
key_env = "TG_TENANTS_UPSTREAM"
model = "gpt-4o-mini"
requests_per_minute = 1200
[[models]]
name = "backfill"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
key_env = "TG_TENANTS_UPSTREAM"
model = "gpt-4o-mini"
requests_per_minute = 1200
"#,
        sim = sim.url
    );
    let proxy = Proxy::start_logging(
        &config,
        &[
            ("TG_TENANTS_UPSTREAM", UPSTREAM),
            ("TG_KEY_SEARCH", SEARCH),
            ("TG_KEY_BATCH", BATCH),
        ],
        "info",
    );
    let url = proxy.url.clone();
    // Connections and first-call work out of the way of the measurements.
    assert_eq!(chat(&url, SEARCH, "chat").await.status, StatusCode::OK);

    let alone = steady(url.clone(), SEARCH, "chat", SEARCH_PER_SECOND).await;
    let (goodput_alone, p50_alone, mean_alone) = summary(&alone);

    let before = upstream_requests(&sim).await;
    let flood = tokio::spawn(steady(url.clone(), BATCH, "backfill", FLOOD_PER_SECOND));
    let beside = steady(url.clone(), SEARCH, "chat", SEARCH_PER_SECOND).await;
    let flooded = flood.await.unwrap();
    let upstream = upstream_requests(&sim).await - before;
    let (goodput_beside, p50_beside, mean_beside) = summary(&beside);

    println!(
        "search team alone: {goodput_alone:.2} calls/s, p50 {p50_alone:?}, mean {mean_alone:?}; \
         beside the flood: {goodput_beside:.2} calls/s ({:.3}×), p50 {p50_beside:?} ({:.3}×), \
         mean {mean_beside:?} ({:.3}×)",
        goodput_beside / goodput_alone,
        p50_beside.as_secs_f64() / p50_alone.as_secs_f64(),
        mean_beside.as_secs_f64() / mean_alone.as_secs_f64(),
    );
    assert!(
        alone
            .iter()
            .chain(&beside)
            .all(|o| o.status == StatusCode::OK),
        "every search call answered: {:?}",
        beside.iter().map(|o| o.status).collect::<Vec<_>>()
    );
    assert!(goodput_beside >= 0.9 * goodput_alone);
    assert!(
        p50_beside.as_secs_f64() <= 1.1 * p50_alone.as_secs_f64(),
        "median latency within 10 %: {p50_beside:?} vs {p50_alone:?}"
    );
    assert!(
        mean_beside.as_secs_f64() <= 1.1 * mean_alone.as_secs_f64(),
        "mean latency within 10 %: {mean_beside:?} vs {mean_alone:?}"
    );

    // The flood: held to its 600 a minute (a full minute's worth may go at once, no more),
    // everything else refused at once, never to be retried.
    let served = flooded
        .iter()
        .filter(|o| o.status == StatusCode::OK)
        .count();
    let refused: Vec<&Outcome> = flooded
        .iter()
        .filter(|o| o.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    println!(
        "batch job: {} calls offered, {served} served, {} refused; the provider saw {upstream}",
        flooded.len(),
        refused.len()
    );
    assert_eq!(served + refused.len(), flooded.len(), "only 200s and 429s");
    assert!(served <= 600 + 8, "{served} served past its limit");
    assert!(
        refused
            .iter()
            .all(|o| o.should_retry.as_deref() == Some("false")),
        "a tenant's own limit is not for its SDK to retry"
    );
    let slowest_refusal = refused.iter().map(|o| o.took).max().unwrap();
    assert!(
        slowest_refusal < Duration::from_secs(1),
        "refused at once, not queued: {slowest_refusal:?}"
    );
    assert_eq!(
        upstream,
        (served + beside.len()) as u64,
        "the provider saw only the calls that were served"
    );
    let metrics = send(support::get(&format!("{url}/metrics"))).await.body;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("tenant=\"batch\"") && !metrics.contains(BATCH),
        "tenants are labelled by name, never key"
    );
}
