//! Limits learned from refusals, against upstreams that send no rate-limit headers.
//!
//! Done when, for each kind of limiter, offered two and four times its hidden limit for ten
//! simulated minutes: after the first minute the answers reach 95 % of the hidden limit, the
//! upstream's 429s are at most 2 % of its calls, and no request reaches the caller as a 429
//! while its deadline allows waiting it out (a request whose turn would come after its deadline
//! is refused by the limiter itself, at once: with twice the limit offered, half must be; and
//! with that much offered, every request sent has waited nearly its whole deadline, so a 429
//! for one of them is handed back rather than waited out).
//!
//! The stack is the standard one's middle: Annotate → Retry → RateLimit (nothing configured)
//! → Classify → `tollgate-sim` in process, in paused time, so ten minutes take well under a
//! second of the test's own time per run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::RateLimited;
use tollgate_core::{BoxError, Deadline, Outcome};
use tollgate_ratelimit::{Quotas, RateLimitLayer};
use tollgate_retry::RetryLayer;
use tollgate_sim::{Rejection, SimConfig, SimService, SimStats};
use tower::{ServiceBuilder, ServiceExt};

const MINUTES: u64 = 10;
const KEY: &str = "key-no-headers";
/// How long a caller is willing to wait for its answer.
const DEADLINE: Duration = Duration::from_secs(120);

/// How a request is written for the upstream.
#[derive(Clone, Copy, Debug)]
enum Dialect {
    /// Gemini's native API: no rate-limit headers, 429s naming a …PerMinute… quota.
    Gemini,
    /// OpenAI's API from a host that sends no rate-limit headers: a 429 says only "Please try
    /// again in …" in its message.
    OpenAi,
}

/// One kind of limiter, as the simulator plays it.
struct Shape {
    name: &'static str,
    dialect: Dialect,
    /// The hidden limit, in requests a minute.
    per_minute: u64,
    /// The key's settings in the simulator's `[[keys]]` table (besides the key itself).
    key: &'static str,
}

#[derive(Debug, Default)]
struct Tally {
    /// Answers by the minute they came back in.
    answered: Vec<u64>,
    /// Requests that reached the caller as a 429 from the upstream, with time left to wait it
    /// out.
    caller_429: u64,
    /// Requests answered 429 too close to their deadline to wait it out.
    out_of_time: u64,
    /// Requests the limiter refused at once because their turn would come after their
    /// deadline.
    refused_locally: u64,
    other: Vec<String>,
}

fn request(dialect: Dialect, i: u64) -> Request<Full<Bytes>> {
    match dialect {
        Dialect::Gemini => {
            let body = json!({"contents": [{"parts": [{"text": format!("question {i}")}]}],
                "generationConfig": {"maxOutputTokens": 32}});
            Request::post(
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            )
            .header("x-goog-api-key", KEY)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
        }
        Dialect::OpenAi => {
            let body = json!({"model": "llama-3.1-8b-instant", "max_tokens": 32,
                "messages": [{"role": "user", "content": format!("question {i}")}]});
            Request::post("https://llm.internal.example/v1/chat/completions")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap()
        }
    }
}

/// The simulator never fails.
fn unreachable(never: std::convert::Infallible) -> BoxError {
    match never {}
}

fn rate_limited(stats: &SimStats) -> u64 {
    stats
        .rejected
        .get(&Rejection::RateLimited)
        .copied()
        .unwrap_or(0)
}

/// Offers `factor` times the shape's hidden limit for ten minutes; returns the tally and the
/// simulator's counters after the first minute and at the end.
async fn run(shape: &Shape, factor: u64) -> (Tally, SimStats, SimStats) {
    let config = format!(
        "seed = 11\n[latency]\ntime_to_first_token = \"200ms\"\n[output]\nmin_tokens = 8\n\
         max_tokens = 32\n[[keys]]\nkey = \"{KEY}\"\n{}",
        shape.key
    );
    let sim = SimService::new(SimConfig::from_toml(&config).unwrap()).unwrap();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(RetryLayer::new().with_deadline(DEADLINE))
        .layer(RateLimitLayer::new(Quotas::unlimited()))
        .layer(ClassifyLayer::new())
        .map_err(unreachable)
        .service(sim.clone());
    let tally = Arc::new(Mutex::new(Tally {
        answered: vec![0; MINUTES as usize + 3],
        ..Tally::default()
    }));
    let start = Instant::now();
    let gap = Duration::from_secs(60) / u32::try_from(shape.per_minute * factor).unwrap();
    let requests = shape.per_minute * factor * MINUTES;
    let mut tasks = Vec::new();
    let mut after_first_minute = None;
    for i in 0..requests {
        let at = start + gap * u32::try_from(i).unwrap();
        tokio::time::sleep_until(at).await;
        if after_first_minute.is_none() && at >= start + Duration::from_secs(60) {
            after_first_minute = Some(sim.stats());
        }
        let stack = stack.clone();
        let tally = tally.clone();
        let mut request = request(shape.dialect, i);
        request.extensions_mut().insert(Deadline::after(DEADLINE));
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + DEADLINE;
            let result = stack.oneshot(request).await;
            let answered = match result {
                Ok(response) if response.status().is_success() => {
                    response.into_body().collect().await.unwrap();
                    Ok(start.elapsed().as_secs() / 60)
                }
                Ok(response) if response.status() == 429 => {
                    // A 429 the caller's deadline left no time to wait out is allowed through;
                    // one it could have waited out is a failure of the pace.
                    let wait = response
                        .extensions()
                        .get::<Outcome>()
                        .and_then(|o| o.retry_after)
                        .unwrap_or_default();
                    let left = deadline.saturating_duration_since(Instant::now());
                    Err(Ok(if left > wait { 429 } else { 0 }))
                }
                Ok(response) => Err(Ok(response.status().as_u16())),
                Err(error) => Err(Err(error)),
            };
            let mut tally = tally.lock().unwrap();
            match answered {
                Ok(minute) => {
                    let slot = (minute as usize).min(tally.answered.len() - 1);
                    tally.answered[slot] += 1;
                }
                Err(Ok(429)) => tally.caller_429 += 1,
                Err(Ok(0)) => tally.out_of_time += 1,
                Err(Ok(status)) => tally.other.push(format!("status {status}")),
                Err(Err(error)) if error.is::<RateLimited>() => tally.refused_locally += 1,
                Err(Err(error)) => tally.other.push(error.to_string()),
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let tally = Arc::try_unwrap(tally).unwrap().into_inner().unwrap();
    (tally, after_first_minute.unwrap(), sim.stats())
}

/// Runs `shape` at `factor` × its limit and checks what this file promises.
async fn converges(shape: Shape, factor: u64) {
    let (tally, first, last) = run(&shape, factor).await;
    let calls = last.received - first.received;
    let refused = rate_limited(&last) - rate_limited(&first);
    let answered: u64 = tally.answered[1..MINUTES as usize].iter().sum();
    let goodput = answered as f64 / ((MINUTES - 1) * shape.per_minute) as f64;
    let share_429 = refused as f64 / calls.max(1) as f64;
    println!(
        "{} at {factor}×: answers per minute {:?}; after the first minute {:.1} % of the \
         limit, {refused} 429s in {calls} upstream calls ({:.2} %); callers: {} 429s with time \
         left, {} without, {} refused locally, other {:?}",
        shape.name,
        tally.answered,
        goodput * 100.0,
        share_429 * 100.0,
        tally.caller_429,
        tally.out_of_time,
        tally.refused_locally,
        tally.other,
    );
    assert!(goodput >= 0.95, "{}: goodput {goodput:.3}", shape.name);
    assert!(
        share_429 <= 0.02,
        "{}: 429 share {share_429:.3}",
        shape.name
    );
    assert_eq!(
        tally.caller_429, 0,
        "{}: a 429 reached a caller",
        shape.name
    );
    assert!(tally.other.is_empty(), "{}: {:?}", shape.name, tally.other);
}

fn gemini_per_minute() -> Shape {
    Shape {
        name: "Gemini, 60 a minute in a token bucket of a minute",
        dialect: Dialect::Gemini,
        per_minute: 60,
        key: "requests_per_minute = 60\n",
    }
}

fn gemini_fixed_minute() -> Shape {
    Shape {
        name: "Gemini, 30 a minute in fixed one-minute windows",
        dialect: Dialect::Gemini,
        per_minute: 30,
        key: "requests_per_minute = 30\nwindow = \"60s\"\n",
    }
}

fn no_headers(name: &'static str, per_minute: u64, key: &'static str) -> Shape {
    Shape {
        name,
        dialect: Dialect::OpenAi,
        per_minute,
        key,
    }
}

fn leaky_bucket() -> Shape {
    no_headers(
        "no headers, a leaky bucket of 5 a second",
        300,
        "requests_per_minute = 300\nwindow = \"leaky_bucket\"\nrate_limit_headers = false\n",
    )
}

fn sliding_minute() -> Shape {
    no_headers(
        "no headers, 120 in any sliding minute",
        120,
        "requests_per_minute = 120\nwindow = \"sliding:60s\"\nrate_limit_headers = false\n",
    )
}

fn small_bucket() -> Shape {
    no_headers(
        "no headers, a token bucket of 120 a minute with a burst of 5",
        120,
        "requests_per_minute = 120\nburst = 5\nrate_limit_headers = false\n",
    )
}

fn fixed_ten_seconds() -> Shape {
    no_headers(
        "no headers, 120 a minute in fixed 10 s windows (Azure)",
        120,
        "requests_per_minute = 120\nwindow = \"10s\"\nrate_limit_headers = false\n",
    )
}

fn fixed_second() -> Shape {
    no_headers(
        "no headers, 600 a minute in fixed 1 s windows (Azure)",
        600,
        "requests_per_minute = 600\nwindow = \"1s\"\nrate_limit_headers = false\n",
    )
}

#[tokio::test(start_paused = true)]
async fn a_leaky_bucket_at_twice_its_limit() {
    converges(leaky_bucket(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_leaky_bucket_at_four_times_its_limit() {
    converges(leaky_bucket(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn a_sliding_minute_at_twice_its_limit() {
    converges(sliding_minute(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_sliding_minute_at_four_times_its_limit() {
    converges(sliding_minute(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn a_small_token_bucket_at_twice_its_limit() {
    converges(small_bucket(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_small_token_bucket_at_four_times_its_limit() {
    converges(small_bucket(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_ten_second_windows_at_twice_their_limit() {
    converges(fixed_ten_seconds(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_ten_second_windows_at_four_times_their_limit() {
    converges(fixed_ten_seconds(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_one_second_windows_at_twice_their_limit() {
    converges(fixed_second(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_one_second_windows_at_four_times_their_limit() {
    converges(fixed_second(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn a_per_minute_bucket_at_twice_its_limit() {
    converges(gemini_per_minute(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_per_minute_bucket_at_four_times_its_limit() {
    converges(gemini_per_minute(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_minute_windows_at_twice_their_limit() {
    converges(gemini_fixed_minute(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_minute_windows_at_four_times_their_limit() {
    converges(gemini_fixed_minute(), 4).await;
}
