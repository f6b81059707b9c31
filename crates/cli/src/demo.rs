//! `tollgate demo`: the same workload twice against the built-in simulated provider — through
//! a naive client with SDK-style retries, then through Tollgate's standard stack — and a
//! side-by-side table of what each cost.
//!
//! The provider is `docs/scenarios/demo.toml`: a tier-1 OpenAI key (500 requests and 200,000
//! tokens a minute), 2 % of calls failing with a 500, and an overload from minute 2 to minute 3.
//! A second comparison runs against `docs/scenarios/gemini-free-tier.toml`, a provider that
//! sends no rate-limit headers at all: Tollgate paces it at a limit learned from its 429s.
//! Both runs play in simulated time (tokio's clock, paused and advanced as the work waits), so
//! minutes of traffic against per-minute limits take seconds; every request still goes through
//! the real layers and the real simulator.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use rand::RngExt as _;
use tokio::time::Instant;
use tollgate::{LlmStack, StackConfig};
use tollgate_core::BoxError;
use tollgate_sim::SimService;

mod scenario;

use self::scenario::Scenario;
use tower::ServiceExt;

/// Arguments of `tollgate demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Requests in the workload (four chat completions to one embedding).
    #[arg(long, default_value_t = 3_000)]
    requests: usize,
    /// Requests the application sends at once.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Requests in the second comparison, against a provider that sends no rate-limit headers
    /// (Gemini's free tier), from 8 workers.
    #[arg(long, default_value_t = 150)]
    gemini_requests: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one run came to.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    completed: usize,
    failed: usize,
    rate_limited_429: usize,
    overloaded_529: usize,
    server_errors_5xx: usize,
    upstream_calls: usize,
    tokens: u64,
    simulated_seconds: f64,
    p50_ms: u64,
    p99_ms: u64,
    cost_usd: f64,
}

/// The client most applications start with: the official SDKs' defaults — two retries on 408,
/// 409, 429 and 5xx, waiting the `retry-after` the provider sent (up to 60 s) or 0.5 s doubling
/// up to 8 s with jitter — and no other protection.
async fn naive_call(
    scenario: Scenario,
    sim: SimService,
    n: usize,
    rng: Arc<std::sync::Mutex<tollgate_core::rng::Rng>>,
) -> Result<StatusCode, BoxError> {
    let mut attempt = 0u32;
    loop {
        let response = sim.clone().oneshot(scenario.request(n)).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_millis)
            .or_else(|| {
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
                    .map(Duration::from_secs_f64)
            });
        response.into_body().collect().await?;
        let retryable = matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error();
        if !retryable || attempt >= 2 {
            return Ok(status);
        }
        let backoff = Duration::from_millis(500 * (1 << attempt)).min(Duration::from_secs(8));
        let jitter = 1.0 - 0.25 * rng.lock().map_or(0.5, |mut r| r.random::<f64>());
        let wait = retry_after
            .filter(|w| *w <= Duration::from_secs(60))
            .unwrap_or(backoff.mul_f64(jitter));
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Runs the workload with `workers` in parallel; `call` sends request `n`.
async fn run<F, Fut>(
    label: &str,
    requests: usize,
    workers: usize,
    call: F,
) -> (Vec<(bool, Duration)>, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<StatusCode, BoxError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let next = next.clone();
            let done = done.clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= requests {
                        return results;
                    }
                    let sent = Instant::now();
                    let ok = matches!(call(n).await, Ok(status) if status.is_success());
                    results.push((ok, sent.elapsed()));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let progress = tokio::spawn({
        let done = done.clone();
        let label = label.to_owned();
        async move {
            // Redrawn in place on a terminal; a line per quarter otherwise (logs, CI).
            let live = std::io::stderr().is_terminal();
            let mut quarter = 0;
            loop {
                let finished = done.load(Ordering::Relaxed);
                let filled = finished * 30 / requests.max(1);
                let line = format!(
                    "  {label:<9} [{}{}] {finished:>5}/{requests}  {:>4.0} s simulated",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    start.elapsed().as_secs_f64()
                );
                if live {
                    eprint!("\r{line}");
                    let _ = std::io::stderr().flush();
                } else if finished * 4 >= requests * (quarter + 1) {
                    quarter = finished * 4 / requests.max(1);
                    eprintln!("{line}");
                }
                if finished >= requests {
                    if live {
                        eprintln!();
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let mut results = Vec::with_capacity(requests);
    for task in tasks {
        results.extend(task.await.unwrap_or_default());
    }
    let elapsed = start.elapsed();
    let _ = progress.await;
    (results, elapsed)
}

fn report(
    scenario: Scenario,
    sim: &SimService,
    results: &[(bool, Duration)],
    elapsed: Duration,
) -> Report {
    let log = sim.log();
    let mut latencies: Vec<Duration> = results
        .iter()
        .filter(|(ok, _)| *ok)
        .map(|(_, d)| *d)
        .collect();
    latencies.sort_unstable();
    let percentile = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Report {
        completed: results.iter().filter(|(ok, _)| *ok).count(),
        failed: results.iter().filter(|(ok, _)| !*ok).count(),
        rate_limited_429: log.iter().filter(|e| e.status == 429).count(),
        overloaded_529: log.iter().filter(|e| e.status == 529).count(),
        server_errors_5xx: log
            .iter()
            .filter(|e| (500..600).contains(&e.status) && e.status != 529)
            .count(),
        upstream_calls: log.len(),
        tokens: log.iter().map(|e| e.input_tokens + e.output_tokens).sum(),
        simulated_seconds: elapsed.as_secs_f64(),
        p50_ms: percentile(50),
        p99_ms: percentile(99),
        cost_usd: {
            let prices = tollgate_budget::PriceTable::shipped();
            log.iter().map(|e| scenario.cost(&prices, e)).sum()
        },
    }
}

/// Runs `scenario`'s workload through the naive client, then through the stack.
async fn compare(
    scenario: Scenario,
    requests: usize,
    workers: usize,
) -> Result<(Report, Report), String> {
    eprintln!("{}", scenario.describe(requests, workers));
    let naive_sim = scenario.sim()?;
    let upstream = naive_sim.clone();
    let rng = Arc::new(std::sync::Mutex::new(tollgate_core::rng::seeded(7)));
    let (results, elapsed) = run("naive", requests, workers, move |n| {
        naive_call(scenario, upstream.clone(), n, rng.clone())
    })
    .await;
    let naive = report(scenario, &naive_sim, &results, elapsed);

    let stack_sim = scenario.sim()?;
    // The simulated key counts every model against one limit.
    let config = StackConfig::from_toml(&format!(
        "preset = \"balanced\"\nmax_concurrent_requests = {workers}\nlimits_per_model = false\nseed = 7"
    ))
    .map_err(|e| e.to_string())?;
    let stack = LlmStack::new(&config).map_err(|e| e.to_string())?;
    let client = tower::ServiceBuilder::new()
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .service(stack_sim.clone());
    let (llm, _handle) = stack.service(client);
    let (results, elapsed) = run("tollgate", requests, workers, move |n| {
        let llm = llm.clone();
        async move {
            let response: Response<_> = llm.oneshot(scenario.request(n)).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok(status)
        }
    })
    .await;
    let tollgate = report(scenario, &stack_sim, &results, elapsed);
    Ok((naive, tollgate))
}

fn table(naive: &Report, tollgate: &Report) -> String {
    let rows: [(&str, String, String); 11] = [
        (
            "completed",
            naive.completed.to_string(),
            tollgate.completed.to_string(),
        ),
        (
            "failed",
            naive.failed.to_string(),
            tollgate.failed.to_string(),
        ),
        (
            "429s received",
            naive.rate_limited_429.to_string(),
            tollgate.rate_limited_429.to_string(),
        ),
        (
            "529s received",
            naive.overloaded_529.to_string(),
            tollgate.overloaded_529.to_string(),
        ),
        (
            "other 5xx received",
            naive.server_errors_5xx.to_string(),
            tollgate.server_errors_5xx.to_string(),
        ),
        (
            "upstream calls",
            naive.upstream_calls.to_string(),
            tollgate.upstream_calls.to_string(),
        ),
        (
            "tokens billed",
            naive.tokens.to_string(),
            tollgate.tokens.to_string(),
        ),
        (
            "time (simulated)",
            format!("{:.0} s", naive.simulated_seconds),
            format!("{:.0} s", tollgate.simulated_seconds),
        ),
        (
            "p50 latency",
            format!("{:.1} s", naive.p50_ms as f64 / 1000.0),
            format!("{:.1} s", tollgate.p50_ms as f64 / 1000.0),
        ),
        (
            "p99 latency",
            format!("{:.1} s", naive.p99_ms as f64 / 1000.0),
            format!("{:.1} s", tollgate.p99_ms as f64 / 1000.0),
        ),
        (
            "cost at list prices",
            format!("${:.3}", naive.cost_usd),
            format!("${:.3}", tollgate.cost_usd),
        ),
    ];
    let mut out = format!("\n{:<20} {:>14} {:>14}\n", "", "naive client", "tollgate");
    for (name, a, b) in rows {
        out.push_str(&format!("{name:<20} {a:>14} {b:>14}\n"));
    }
    out
}

pub(crate) fn run_demo(args: &Args) -> Result<(), String> {
    if args.requests == 0 || args.workers == 0 || args.gemini_requests == 0 {
        return Err("--requests, --workers and --gemini-requests must be at least 1".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let wall = std::time::Instant::now();
    let (naive, tollgate) =
        runtime.block_on(compare(Scenario::OpenAiTier1, args.requests, args.workers))?;
    let (gemini_naive, gemini_tollgate) = runtime.block_on(compare(
        Scenario::GeminiFreeTier,
        args.gemini_requests,
        Scenario::GEMINI_WORKERS,
    ))?;
    let mut stdout = std::io::stdout();
    let text = if args.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "naive": naive,
            "tollgate": tollgate,
            "no_headers": {"naive": gemini_naive, "tollgate": gemini_tollgate},
        }))
        .map_err(|e| e.to_string())?
    } else {
        format!(
            "{}\nA provider that sends no rate-limit headers (Gemini's free tier, 15 requests a \
             minute):{}\nBoth comparisons took {:.1} s of wall time. The naive client is the \
             official SDKs' default (2 retries, backoff or retry-after);\ntollgate is `LlmStack` \
             with the balanced preset: limits learned from the provider's headers (or, without \
             headers, from its 429s),\nretries with a budget, a breaker, an adaptive concurrency \
             limit and micro-batched embeddings.",
            table(&naive, &tollgate),
            table(&gemini_naive, &gemini_tollgate),
            wall.elapsed().as_secs_f64()
        )
    };
    writeln!(stdout, "{text}").map_err(|e| format!("cannot write to stdout: {e}"))
}
