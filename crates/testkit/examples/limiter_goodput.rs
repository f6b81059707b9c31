//! Goodput against the rate limit: the same open-loop traffic, at several multiples of a key's
//! limit, through Tollgate's rate limiter and through a naive client, against the simulator.
//!
//! `cargo run --release -p tollgate-testkit --example limiter_goodput [-- --json FILE]`
//!
//! The provider is `tollgate-sim` in process with one key limited to [`RPM`] requests a minute
//! (tokens far above what the traffic needs), answering after 200 ms plus 2 ms per output
//! token. For [`DURATION`] of simulated time, requests arrive at a fixed pace of 0.5, 1, 2 and
//! 4 times the limit, each on its own task (open loop: arrivals never wait for answers). The
//! run is on tokio's paused clock, so minutes of traffic take well under a second.
//!
//! - `naive`: the official SDKs' defaults, as in `tollgate demo`: up to two retries on 408, 409,
//!   429 and 5xx, waiting the provider's `retry-after` (up to 60 s) or 0.5 s doubling with
//!   jitter.
//! - `tollgate`: Annotate → [`RateLimitLayer`] with the key's quota (the standard stack's
//!   limiter; requests wait their turn in line, at most [`MAX_WAIT`], then fail locally
//!   without a call) → Classify → the simulator. No retries: the limiter's job is to need none.
//!
//! Goodput is the successes answered between [`WARM_UP`] and the end of the arrivals, per
//! second: both clients start with the key's bucket full (a minute of burst, as a real key has
//! after a quiet period), which the warm-up leaves out. A request answered after the end counts
//! in `completed` but not in goodput. The numbers go to stdout as a
//! table and, with `--json FILE`, as JSON for `scripts/benchmarks`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use rand::RngExt as _;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Provider};
use tollgate_ratelimit::{Quotas, RateLimitLayer};
use tollgate_sim::{SimConfig, SimService};
use tower::{ServiceBuilder, ServiceExt};

/// The key's request limit.
const RPM: u64 = 600;
/// The key's token limit: never the binding one here.
const TPM: u64 = 100_000_000;
/// How long requests arrive.
const DURATION: Duration = Duration::from_secs(240);
/// The start of the run that goodput leaves out: the key's bucket starts full, and its burst of
/// a minute's quota would otherwise count as goodput.
const WARM_UP: Duration = Duration::from_secs(60);
/// Offered load, as multiples of the limit.
const LOADS: [f64; 4] = [0.5, 1.0, 2.0, 4.0];
/// The longest a request waits in Tollgate's line before it fails without a call.
const MAX_WAIT: Duration = Duration::from_secs(30);

fn sim() -> SimService {
    let config = SimConfig::from_toml(&format!(
        "seed = 5\nlog_capacity = 1000000\n\
         [latency]\ntime_to_first_token = \"200ms\"\nper_output_token = \"2ms\"\n\
         [output]\nmin_tokens = 16\nmax_tokens = 64\n\
         [[keys]]\nkey = \"sk-goodput\"\nrequests_per_minute = {RPM}\ntokens_per_minute = {TPM}\n"
    ))
    .expect("a valid scenario");
    SimService::new(config).expect("a valid scenario")
}

fn request(n: usize) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":64,"messages":[{{"role":"user","content":"Summarise ticket {n}: the customer reports a problem with the invoice."}}]}}"#
    );
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-goodput")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

/// The official SDKs' defaults (see the module docs).
async fn naive_call(
    sim: SimService,
    n: usize,
    rng: Arc<Mutex<tollgate_core::rng::Rng>>,
) -> Result<StatusCode, BoxError> {
    let mut attempt = 0u32;
    loop {
        let response = sim.clone().oneshot(request(n)).await?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)?
                .to_str()
                .ok()?
                .parse::<f64>()
                .ok()
        };
        let retry_after = header("retry-after-ms")
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .or_else(|| header("retry-after").map(Duration::from_secs_f64));
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

/// What one client did at one offered load.
#[derive(Debug, Default)]
struct Run {
    offered_per_s: f64,
    sent: usize,
    completed: usize,
    failed: usize,
    goodput_per_s: f64,
    upstream_calls: usize,
    received_429: usize,
}

impl Run {
    fn json(&self) -> String {
        format!(
            r#"{{"offered_per_s":{:.3},"sent":{},"completed":{},"failed":{},"goodput_per_s":{:.3},"upstream_calls":{},"received_429":{}}}"#,
            self.offered_per_s,
            self.sent,
            self.completed,
            self.failed,
            self.goodput_per_s,
            self.upstream_calls,
            self.received_429
        )
    }
}

/// Sends requests at `per_s` for [`DURATION`], each through `call` on its own task, and waits
/// for every one to end. Runs inside a `LocalSet`.
async fn open_loop<F, Fut>(sim: &SimService, per_s: f64, call: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<StatusCode, BoxError>> + 'static,
{
    let start = Instant::now();
    let end = start + DURATION;
    let every = Duration::from_secs_f64(1.0 / per_s);
    let sent = (DURATION.as_secs_f64() * per_s).round() as usize;
    let mut tasks = Vec::with_capacity(sent);
    for n in 0..sent {
        tokio::time::sleep_until(start + every.mul_f64(n as f64)).await;
        let call = call(n);
        // On this thread (a `LocalSet`): rustc cannot prove the layered futures `Send`
        // (its higher-ranked `From<BoxError>` limitation), and one thread is all this needs.
        tasks.push(tokio::task::spawn_local(async move {
            let ok = matches!(call.await, Ok(status) if status.is_success());
            (ok, Instant::now())
        }));
    }
    let mut run = Run {
        offered_per_s: per_s,
        sent,
        ..Run::default()
    };
    let mut in_window = 0;
    for task in tasks {
        let (ok, at) = task.await.expect("the call does not panic");
        if ok {
            run.completed += 1;
            if at >= start + WARM_UP && at <= end {
                in_window += 1;
            }
        } else {
            run.failed += 1;
        }
    }
    run.goodput_per_s = in_window as f64 / (DURATION - WARM_UP).as_secs_f64();
    let log = sim.log();
    run.upstream_calls = log.len();
    run.received_429 = log.iter().filter(|entry| entry.status == 429).count();
    run
}

async fn naive(per_s: f64) -> Run {
    let sim = sim();
    let rng = Arc::new(Mutex::new(tollgate_core::rng::seeded(7)));
    let upstream = sim.clone();
    open_loop(&sim, per_s, move |n| {
        naive_call(upstream.clone(), n, rng.clone())
    })
    .await
}

async fn tollgate(per_s: f64) -> Run {
    let sim = sim();
    let client = ServiceBuilder::new()
        .map_err(|never: Infallible| -> BoxError { match never {} })
        .service(sim.clone());
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        .layer(
            RateLimitLayer::new(Quotas::per_minute(RPM, TPM))
                .with_per_model_limits(false)
                .with_max_wait(MAX_WAIT),
        )
        .layer(ClassifyLayer::new())
        .service(client);
    open_loop(&sim, per_s, move |n| {
        let stack = stack.clone();
        async move {
            let response = stack.oneshot(request(n)).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok(status)
        }
    })
    .await
}

fn main() {
    let json_path = match std::env::args().nth(1).as_deref() {
        Some("--json") => Some(std::env::args().nth(2).expect("--json FILE")),
        Some(other) => panic!("unknown argument {other}; usage: limiter_goodput [--json FILE]"),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let wall = std::time::Instant::now();
    let limit_per_s = RPM as f64 / 60.0;
    let mut rows = Vec::new();
    for load in LOADS {
        let per_s = load * limit_per_s;
        let naive = tokio::task::LocalSet::new().block_on(&runtime, naive(per_s));
        let tollgate = tokio::task::LocalSet::new().block_on(&runtime, tollgate(per_s));
        rows.push((load, naive, tollgate));
    }
    println!(
        "limit {RPM} requests/min ({limit_per_s:.1}/s), {} s of open-loop traffic per point \
         (goodput after the first {} s), {:.1} s of wall time",
        DURATION.as_secs(),
        WARM_UP.as_secs(),
        wall.elapsed().as_secs_f64()
    );
    println!(
        "{:>6} {:>9} | {:>9} {:>6} {:>6} {:>7} | {:>9} {:>6} {:>6} {:>7}",
        "load",
        "offered/s",
        "naive/s",
        "failed",
        "429s",
        "calls",
        "tollgate/s",
        "failed",
        "429s",
        "calls"
    );
    let mut json = format!(
        r#"{{"limit_per_min":{RPM},"limit_per_s":{limit_per_s:.3},"duration_s":{},"warm_up_s":{},"max_wait_s":{},"points":["#,
        DURATION.as_secs(),
        WARM_UP.as_secs(),
        MAX_WAIT.as_secs()
    );
    for (index, (load, naive, tollgate)) in rows.iter().enumerate() {
        println!(
            "{load:>5.1}x {:>9.1} | {:>9.2} {:>6} {:>6} {:>7} | {:>9.2} {:>6} {:>6} {:>7}",
            naive.offered_per_s,
            naive.goodput_per_s,
            naive.failed,
            naive.received_429,
            naive.upstream_calls,
            tollgate.goodput_per_s,
            tollgate.failed,
            tollgate.received_429,
            tollgate.upstream_calls
        );
        let comma = if index == 0 { "" } else { "," };
        let _ = write!(
            json,
            r#"{comma}{{"load":{load},"naive":{},"tollgate":{}}}"#,
            naive.json(),
            tollgate.json()
        );
    }
    json.push_str("]}\n");
    if let Some(path) = json_path {
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
}
