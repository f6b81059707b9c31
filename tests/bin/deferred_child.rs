//! The child of the deferred queue's crash test (`tests/deferred_crash.rs`): opens the queue at
//! the given path, submits the documents it does not hold yet (by key, in chunks, printing
//! `ack <key> <job>` after each durable write), and sends them through the simulator's OpenAI
//! Batch API; once every job has ended it prints `state <key> <job> <status>` for each and
//! `complete`. The parent kills it with SIGKILL at random points and starts it again.
//!
//! ```text
//! deferred-child <store path> <simulator url> <documents>
//! ```

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tollgate_core::Secret;
use tollgate_deferred::{
    DeferredConfig, DeferredQueue, JobOptions, JobStatus, OpenAiBatchApi, transport,
};

const CHUNK: usize = 50;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(url), Some(documents)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: deferred-child <store> <simulator url> <documents>".into());
    };
    let documents: usize = documents.parse()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let net = transport(client);
    let queue = DeferredQueue::builder(&path, net.clone())
        .config(DeferredConfig {
            interval: Duration::from_millis(200),
            poll_interval: Duration::from_millis(100),
            max_batch_size: 100,
            max_age: Duration::from_secs(3600),
            ..DeferredConfig::default()
        })
        .batch_api(OpenAiBatchApi::new(&url, Secret::new("sk-crash"), net))
        .open()
        .await?;
    let held: std::collections::HashSet<String> = queue
        .keyed_jobs()
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let missing: Vec<usize> = (0..documents)
        .filter(|i| !held.contains(&format!("doc-{i}")))
        .collect();
    let mut stdout = std::io::stdout();
    for chunk in missing.chunks(CHUNK) {
        let requests = chunk
            .iter()
            .map(|i| {
                let body = json!({"model": "gpt-4o-mini", "max_tokens": 8,
                    "messages": [{"role": "user", "content": format!("document {i}")}]});
                let request = http::Request::post(format!("{url}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(Bytes::from(body.to_string()))
                    .expect("a request");
                let options = JobOptions {
                    key: Some(format!("doc-{i}")),
                    ..JobOptions::default()
                };
                (request, options)
            })
            .collect();
        let ids = queue.submit_many(requests).await?;
        for (i, id) in chunk.iter().zip(ids) {
            writeln!(stdout, "ack doc-{i} {}", id.0)?;
        }
        stdout.flush()?;
    }
    // Wait for every job to end.
    let jobs = queue.keyed_jobs().await?;
    for (_, id) in &jobs {
        let _ = queue.wait(*id).await;
    }
    for (key, id) in &jobs {
        let state = match queue.status(*id).await? {
            Some(JobStatus::Done(output)) => format!("done {}", output.status.as_u16()),
            Some(JobStatus::Failed(error)) => format!("failed {error}"),
            other => format!("unfinished {other:?}"),
        };
        writeln!(stdout, "state {key} {} {state}", id.0)?;
    }
    let stats = queue.snapshot().await?;
    writeln!(
        stdout,
        "stats done={} failed={} batches={} calls={} submit_failures={}",
        stats.done, stats.failed, stats.batches, stats.calls, stats.submit_failures
    )?;
    writeln!(stdout, "complete")?;
    stdout.flush()?;
    queue.shutdown().await;
    Ok(())
}
