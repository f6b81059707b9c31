//! `tollgate bench`: an open-loop load generator.
//!
//! Request `i` is scheduled at `start + i / rps`, whatever the responses do, so a slow server
//! does not quietly lower the offered load (the coordinated omission of closed-loop
//! generators). At most `--concurrency` requests are in flight: a request whose slot comes while
//! all are busy waits for one and counts as a late start (as does any request that starts more
//! than 2 ms after its slot), and latency is measured from the scheduled time, so the wait is
//! in the percentiles rather than hidden. `service_time_ms` is measured from the actual send.
//!
//! `--through-stack` sends through an in-process [`LlmStack`] over the same client, to see
//! what the stack itself adds.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tollgate::{LlmService, LlmStack, StackConfig};
use tower::ServiceExt;

use self::report::{Report, Sample, report, summary};
use crate::proxy::{http_client, refusal_kind};

mod report;

/// Arguments of `tollgate bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server to load: `http://127.0.0.1:8080` (the gateway, the simulator, any
    /// OpenAI-compatible server).
    #[arg(long)]
    target: String,
    /// The path to call.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// Requests per second, scheduled at fixed intervals.
    #[arg(long, default_value_t = 100.0)]
    rps: f64,
    /// How long to send for ("10s", "1m").
    #[arg(long, default_value = "10s", value_parser = tollgate_core::config::duration::parse)]
    duration: Duration,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Give up on a request after this long.
    #[arg(long, default_value = "30s", value_parser = tollgate_core::config::duration::parse)]
    timeout: Duration,
    /// The key sent as `Authorization: Bearer` (and as `x-api-key` on /v1/messages).
    #[arg(long, default_value = "sk-bench")]
    key: String,
    /// The request body (JSON); by default a small request suited to the path.
    #[arg(long)]
    body: Option<String>,
    /// Send through an in-process `LlmStack` instead of directly.
    #[arg(long)]
    through_stack: bool,
    /// The stack's settings for --through-stack (a `StackConfig` TOML or JSON file); by
    /// default the balanced preset with a fixed concurrency limit of --concurrency.
    #[arg(long, requires = "through_stack")]
    stack_config: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

/// Sends `request` (to the target, or through the stack first) and reads the whole response.
async fn send(
    sender: LlmService,
    request: Request<Full<Bytes>>,
) -> Result<StatusCode, &'static str> {
    let response = sender
        .oneshot(request)
        .await
        .map_err(|e| refusal_kind(e.as_ref()))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|_| "broken_body")?;
    Ok(status)
}

/// What every request carries.
#[derive(Debug)]
struct Template {
    uri: Uri,
    body: Bytes,
    key: String,
    anthropic: bool,
}

impl Template {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut builder = Request::post(self.uri.clone())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.key));
        if self.anthropic {
            builder = builder
                .header("x-api-key", &self.key)
                .header("anthropic-version", "2023-06-01");
        }
        builder
            .body(Full::new(self.body.clone()))
            .expect("checked when the template was made")
    }
}

fn default_body(path: &str) -> String {
    let body = if path.contains("embeddings") {
        serde_json::json!({"model": "text-embedding-3-small", "input": "the quick brown fox"})
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        serde_json::json!({"contents": [{"parts": [{"text": "Say hello."}]}],
            "generationConfig": {"maxOutputTokens": 16}})
    } else if path.starts_with("/v1/messages") {
        serde_json::json!({"model": "claude-3-5-haiku-latest", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello."}]})
    } else {
        serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello."}]})
    };
    body.to_string()
}

fn template(args: &Args) -> Result<Template, String> {
    if !args.path.starts_with('/') {
        return Err(format!("--path {:?} must start with /", args.path));
    }
    let target: Option<Uri> = args.target.parse().ok();
    if !target.is_some_and(|t| t.scheme_str() == Some("http") && t.host().is_some()) {
        return Err(format!(
            "--target {:?} must be an http:// URL with a host, e.g. http://127.0.0.1:8080",
            args.target
        ));
    }
    let url = format!("{}{}", args.target.trim_end_matches('/'), args.path);
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--target and --path make {url:?}, not a URL ({e})"))?;
    let body = args
        .body
        .clone()
        .unwrap_or_else(|| default_body(&args.path));
    let template = Template {
        uri,
        body: Bytes::from(body),
        key: args.key.clone(),
        anthropic: args.path.starts_with("/v1/messages"),
    };
    http::HeaderValue::try_from(format!("Bearer {}", template.key))
        .map_err(|_| "--key is not a valid header value".to_owned())?;
    Ok(template)
}

fn check(args: &Args) -> Result<u64, String> {
    if !(args.rps.is_finite() && args.rps > 0.0 && args.rps <= 1_000_000.0) {
        return Err(format!(
            "--rps {} must be above 0 and at most 1000000",
            args.rps
        ));
    }
    if args.duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let requests = (args.rps * args.duration.as_secs_f64()).round().max(1.0);
    if requests > 10_000_000.0 {
        return Err(format!(
            "--rps × --duration is {requests} requests; at most 10000000"
        ));
    }
    Ok(requests as u64)
}

async fn load(args: &Args, sender: LlmService, template: Template, requests: u64) -> Report {
    let template = Arc::new(template);
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = JoinSet::new();
    let mut samples = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
    let start = Instant::now() + Duration::from_millis(5);
    for i in 0..requests {
        let scheduled = start + Duration::from_secs_f64(i as f64 / args.rps);
        tokio::time::sleep_until(scheduled).await;
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let started = Instant::now();
        let (sender, template, timeout) = (sender.clone(), template.clone(), args.timeout);
        tasks.spawn(async move {
            let result = tokio::time::timeout(timeout, send(sender, template.request()))
                .await
                .unwrap_or(Err("timeout"));
            drop(permit);
            Sample {
                scheduled,
                started,
                finished: Instant::now(),
                result,
            }
        });
        while let Some(done) = tasks.try_join_next() {
            samples.extend(done.ok());
        }
    }
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.ok());
    }
    report(args, &samples, start)
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let requests = check(args)?;
    let template = template(args)?;
    let stack = if args.through_stack {
        let config = match &args.stack_config {
            Some(path) => StackConfig::from_file(path).map_err(|e| e.to_string())?,
            // A fixed limit: the stack's cost is measured, not the adaptive limit's pacing.
            None => StackConfig::from_toml(&format!(
                "max_concurrent_requests = {}\nadaptive_concurrency = false",
                args.concurrency
            ))
            .map_err(|e| e.to_string())?,
        };
        Some(LlmStack::new(&config).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    // `tollgate bench` can aim at an https:// URL too (the compiled-in roots).
    let client = http_client(Duration::from_secs(10), &[])?;
    let report = runtime.block_on(async {
        let sender = match stack {
            Some(stack) => stack.service(client).0,
            // The same boxed service shape as the stack's, so both runs pay the same boxing.
            None => LlmService::new(
                client
                    .map_response(|r| r.map(|body| body.map_err(Into::into).boxed_unsync()))
                    .map_err(Into::into),
            ),
        };
        load(args, sender, template, requests).await
    });
    let text = if args.json {
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    } else {
        summary(&report)
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{text}").map_err(|e| format!("cannot write to stdout: {e}"))
}
