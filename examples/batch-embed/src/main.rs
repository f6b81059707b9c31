//! Embeds every text file of a folder, one request per paragraph, through `tollgate-batch`, and
//! reports how many upstream calls that took.
//!
//! Without `TOLLGATE_BASE_URL` it starts `tollgate-sim` on loopback and calls that:
//!
//! ```sh
//! cargo run -p example-batch-embed -- docs
//! ```
//!
//! Against any OpenAI-compatible server (the key, when set, is sent and never printed):
//!
//! ```sh
//! TOLLGATE_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... \
//!     cargo run -p example-batch-embed -- path/to/folder
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tollgate_batch::{BatchConfig, BatchLayer, EmbeddingsCodec};
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_sim::{Sim, SimConfig};
use tower::{ServiceBuilder, ServiceExt};

/// Requests in flight at once (each is one paragraph).
const IN_FLIGHT: usize = 512;

/// The text files under `dir`, depth first.
fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "txt" | "toml" | "http" | "rs")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Paragraphs of at least a few words.
fn paragraphs(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| p.split_whitespace().count() >= 3)
        .map(str::to_owned)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let folder = std::env::args().nth(1).unwrap_or_else(|| "docs".into());
    let mut paths = Vec::new();
    files(Path::new(&folder), &mut paths).map_err(|e| format!("reading {folder}: {e}"))?;
    let chunks: Vec<String> = paths
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| paragraphs(&text).collect::<Vec<_>>())
        .collect();
    if chunks.is_empty() {
        return Err(format!("no paragraphs in text files under {folder}").into());
    }

    let model = std::env::var("TOLLGATE_MODEL").unwrap_or_else(|_| "text-embedding-3-small".into());
    let (base, sim) = match std::env::var("TOLLGATE_BASE_URL") {
        Ok(base) => (base, None),
        Err(_) => {
            let sim = Sim::start(SimConfig::default()).await?;
            (format!("{}/v1", sim.url()), Some(sim))
        }
    };
    let key = std::env::var("OPENAI_API_KEY")
        .ok()
        .or_else(|| sim.as_ref().map(|_| "sk-example".to_owned()));

    // Counts what reaches the wire: every merged call, and any request sent alone.
    let upstream_calls = Arc::new(AtomicU64::new(0));
    let counted = upstream_calls.clone();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let embedder = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(BatchLayer::with_config(
            EmbeddingsCodec,
            BatchConfig::default(), // up to 256 inputs per call, 10 ms max wait
        ))
        .map_request(move |request| {
            counted.fetch_add(1, Ordering::Relaxed);
            request
        })
        .layer(ClassifyLayer::new())
        .service(client);

    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for chunk in &chunks {
        let permit = limit.clone().acquire_owned().await?;
        let mut request = http::Request::post(format!("{base}/embeddings"))
            .header("content-type", "application/json");
        if let Some(key) = &key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let body = json!({"model": model, "input": chunk}).to_string();
        let request = request.body(Full::new(Bytes::from(body)))?;
        let embedder = embedder.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let response = embedder.oneshot(request).await?;
            let status = response.status();
            let body: Value =
                serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
            if !status.is_success() {
                return Err::<u64, BoxError>(format!("{status}: {body}").into());
            }
            Ok(body["usage"]["prompt_tokens"].as_u64().unwrap_or(0))
        });
    }
    let (mut tokens, mut failed) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done? {
            Ok(used) => tokens += used,
            Err(error) => {
                failed += 1;
                eprintln!("failed: {error}");
            }
        }
    }
    let calls = upstream_calls.load(Ordering::Relaxed);
    println!(
        "embedded {} paragraphs from {} files under {folder} in {:.2?}",
        chunks.len() - failed,
        paths.len(),
        started.elapsed()
    );
    println!(
        "{calls} upstream calls instead of {}: {:.1} % saved; {tokens} prompt tokens",
        chunks.len(),
        100.0 - calls as f64 / chunks.len() as f64 * 100.0
    );
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}
