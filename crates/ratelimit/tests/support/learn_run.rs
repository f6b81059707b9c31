//! The learned-limit harness shared by `tests/learned.rs` and `examples/learned_plot.rs`: the
//! middle of the standard stack (Annotate → Retry → RateLimit with nothing configured →
//! Classify) over `tollgate-sim` in process, in paused time, offered a multiple of a hidden
//! limit for ten minutes, with the learned pace sampled every second.

// Each user takes what it needs.
#![allow(dead_code)]

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
use tollgate_ratelimit::{Dimension, Quotas, RateLimitLayer};
use tollgate_retry::RetryLayer;
use tollgate_sim::{Rejection, SimConfig, SimService, SimStats};
use tower::{ServiceBuilder, ServiceExt};

pub(crate) const MINUTES: u64 = 10;
pub(crate) const KEY: &str = "key-no-headers";
/// How long a caller is willing to wait for its answer.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// How a request is written for the upstream.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dialect {
    /// Gemini's native API: no rate-limit headers, 429s naming a …PerMinute… quota.
    Gemini,
    /// OpenAI's API from a host that sends no rate-limit headers: a 429 says only "Please try
    /// again in …" in its message.
    OpenAi,
}

/// One kind of limiter, as the simulator plays it.
pub(crate) struct Shape {
    pub(crate) name: &'static str,
    pub(crate) dialect: Dialect,
    /// The hidden limit, in requests a minute.
    pub(crate) per_minute: u64,
    /// The key's settings in the simulator's `[[keys]]` table (besides the key itself).
    pub(crate) key: &'static str,
}

#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Answers by the minute they came back in.
    pub(crate) answered: Vec<u64>,
    /// Requests that reached the caller as a 429 from the upstream, with time left to wait it
    /// out.
    pub caller_429: u64,
    /// Requests answered 429 too close to their deadline to wait it out.
    pub(crate) out_of_time: u64,
    /// Requests the limiter refused at once because their turn would come after their
    /// deadline.
    pub(crate) refused_locally: u64,
    pub(crate) other: Vec<String>,
}

pub(crate) fn request(dialect: Dialect, i: u64) -> Request<Full<Bytes>> {
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
pub(crate) fn unreachable(never: std::convert::Infallible) -> BoxError {
    match never {}
}

pub(crate) fn rate_limited(stats: &SimStats) -> u64 {
    stats
        .rejected
        .get(&Rejection::RateLimited)
        .copied()
        .unwrap_or(0)
}

/// Offers `factor` times the shape's hidden limit for ten minutes; returns the tally and the
/// simulator's counters after the first minute and at the end.
/// What a run saw.
pub(crate) struct Run {
    pub(crate) tally: Tally,
    /// The simulator's counters after the first minute.
    pub(crate) first: SimStats,
    /// And at the end.
    pub(crate) last: SimStats,
    /// The learned requests pace, a minute, each second (0 before one is learned).
    pub(crate) learned: Vec<(f64, f64)>,
}

pub(crate) async fn run(shape: &Shape, factor: u64) -> Run {
    let config = format!(
        "seed = 11\n[latency]\ntime_to_first_token = \"200ms\"\n[output]\nmin_tokens = 8\n\
         max_tokens = 32\n[[keys]]\nkey = \"{KEY}\"\n{}",
        shape.key
    );
    let sim = SimService::new(SimConfig::from_toml(&config).unwrap()).unwrap();
    let limiter = RateLimitLayer::new(Quotas::unlimited());
    let handle = limiter.handle();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(RetryLayer::new().with_deadline(DEADLINE))
        .layer(limiter)
        .layer(ClassifyLayer::new())
        .map_err(unreachable)
        .service(sim.clone());
    let tally = Arc::new(Mutex::new(Tally {
        answered: vec![0; MINUTES as usize + 3],
        ..Tally::default()
    }));
    let start = Instant::now();
    let sampler = tokio::spawn(async move {
        let mut learned = Vec::new();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        for _ in 0..=MINUTES * 60 {
            every.tick().await;
            let pace = handle
                .snapshot()
                .into_iter()
                .flat_map(|s| s.limits)
                .find(|l| l.dimension == Dimension::Requests)
                .map_or(0.0, |l| l.per_minute);
            learned.push((start.elapsed().as_secs_f64(), pace));
        }
        learned
    });
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
    let learned = sampler.await.unwrap();
    Run {
        tally: Arc::try_unwrap(tally).unwrap().into_inner().unwrap(),
        first: after_first_minute.unwrap(),
        last: sim.stats(),
        learned,
    }
}

pub(crate) fn gemini_per_minute() -> Shape {
    Shape {
        name: "Gemini, 60 a minute in a token bucket of a minute",
        dialect: Dialect::Gemini,
        per_minute: 60,
        key: "requests_per_minute = 60\n",
    }
}

pub(crate) fn gemini_fixed_minute() -> Shape {
    Shape {
        name: "Gemini, 30 a minute in fixed one-minute windows",
        dialect: Dialect::Gemini,
        per_minute: 30,
        key: "requests_per_minute = 30\nwindow = \"60s\"\n",
    }
}

pub(crate) fn no_headers(name: &'static str, per_minute: u64, key: &'static str) -> Shape {
    Shape {
        name,
        dialect: Dialect::OpenAi,
        per_minute,
        key,
    }
}

pub(crate) fn leaky_bucket() -> Shape {
    no_headers(
        "no headers, a leaky bucket of 5 a second",
        300,
        "requests_per_minute = 300\nwindow = \"leaky_bucket\"\nrate_limit_headers = false\n",
    )
}

pub(crate) fn sliding_minute() -> Shape {
    no_headers(
        "no headers, 120 in any sliding minute",
        120,
        "requests_per_minute = 120\nwindow = \"sliding:60s\"\nrate_limit_headers = false\n",
    )
}

pub(crate) fn small_bucket() -> Shape {
    no_headers(
        "no headers, a token bucket of 120 a minute with a burst of 5",
        120,
        "requests_per_minute = 120\nburst = 5\nrate_limit_headers = false\n",
    )
}

pub(crate) fn fixed_ten_seconds() -> Shape {
    no_headers(
        "no headers, 120 a minute in fixed 10 s windows (Azure)",
        120,
        "requests_per_minute = 120\nwindow = \"10s\"\nrate_limit_headers = false\n",
    )
}

pub(crate) fn fixed_second() -> Shape {
    no_headers(
        "no headers, 600 a minute in fixed 1 s windows (Azure)",
        600,
        "requests_per_minute = 600\nwindow = \"1s\"\nrate_limit_headers = false\n",
    )
}
