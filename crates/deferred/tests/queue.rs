//! The deferred queue under paused time against the in-process simulator: durable submission,
//! flushes at the interval, max age, plain calls and the OpenAI and Anthropic Batch APIs,
//! restarts, idempotent submission, and a store file that is not a queue.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::Instant;
use tollgate_core::{Clock, Secret};
use tollgate_deferred::{
    AnthropicBatchApi, DeferredConfig, DeferredQueue, DeferredQueueBuilder, JobOptions, JobStatus,
    OpenAiBatchApi, StoreError, Transport, Via, transport,
};
use tollgate_sim::{SimConfig, SimService};

/// Wall-clock time that follows tokio's (paused) clock.
#[derive(Clone)]
struct PausedWall {
    base: SystemTime,
    start: Instant,
}

impl PausedWall {
    fn new() -> Self {
        Self {
            base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            start: Instant::now(),
        }
    }
}

impl Clock for PausedWall {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// A fresh directory of its own for a store, removed (store and all) when dropped: keep it
/// alive as long as any queue opened in it.
fn store_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tollgate-deferred-{name}-"))
        .tempdir()
        .unwrap()
}

/// The store's path in `dir`.
fn store_path(dir: &TempDir) -> PathBuf {
    dir.path().join("queue.redb")
}

fn sim(extra: &str) -> SimService {
    SimService::new(
        SimConfig::from_toml(&format!(
            "seed = 3\n[latency]\ntime_to_first_token = \"100ms\"\nper_output_token = \"1ms\"\n{extra}"
        ))
        .unwrap(),
    )
    .unwrap()
}

fn net(sim: &SimService) -> Transport {
    transport(
        tower::ServiceBuilder::new()
            .map_err(
                |never: std::convert::Infallible| -> tollgate_core::BoxError { match never {} },
            )
            .service(sim.clone()),
    )
}

fn chat(n: usize) -> Request<Bytes> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("summarise document {n}")}]});
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-never-stored")
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

fn message(n: usize) -> Request<Bytes> {
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("note {n}")}]});
    Request::post("https://api.anthropic.com/v1/messages")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

/// Puts a Batch API on a queue's builder.
type WithApi = Option<Box<dyn FnOnce(DeferredQueueBuilder) -> DeferredQueueBuilder>>;

/// A queue over `sim` with its store in `dir`, flushing through `api` when given.
async fn open(
    sim: &SimService,
    dir: &TempDir,
    config: DeferredConfig,
    api: WithApi,
) -> DeferredQueue {
    let builder = DeferredQueue::builder(store_path(dir), keyed(sim))
        .config(config)
        .clock(PausedWall::new());
    let builder = match api {
        Some(with_api) => with_api(builder),
        None => builder,
    };
    builder.open().await.unwrap()
}

fn openai(sim: &SimService) -> WithApi {
    let api = OpenAiBatchApi::new("https://api.openai.com", Secret::new("sk-batch"), net(sim));
    Some(Box::new(move |b| b.batch_api(api)))
}

fn anthropic(sim: &SimService) -> WithApi {
    let api = AnthropicBatchApi::new("https://api.anthropic.com", Secret::new("sk-ant"), net(sim));
    Some(Box::new(move |b| b.batch_api(api)))
}

fn config(interval_s: u64) -> DeferredConfig {
    DeferredConfig {
        interval: Duration::from_secs(interval_s),
        poll_interval: Duration::from_secs(1),
        ..DeferredConfig::default()
    }
}

/// The plain transport adds the key the store never holds.
fn keyed(sim: &SimService) -> Transport {
    transport(
        tower::ServiceBuilder::new()
            .map_request(|mut request: Request<http_body_util::Full<Bytes>>| {
                request
                    .headers_mut()
                    .insert("authorization", "Bearer sk-queue".parse().unwrap());
                request
            })
            .map_err(
                |never: std::convert::Infallible| -> tollgate_core::BoxError { match never {} },
            )
            .service(sim.clone()),
    )
}

#[tokio::test(start_paused = true)]
async fn jobs_wait_for_the_interval_then_go_as_calls() {
    let sim = sim("");
    let dir = store_dir("plain");
    let path = store_path(&dir);
    let queue = DeferredQueue::builder(&path, keyed(&sim))
        .config(config(60))
        .clock(PausedWall::new())
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(queue.submit(chat(n)).await.unwrap());
    }
    assert_eq!(
        queue.status(ids[0]).await.unwrap(),
        Some(JobStatus::Pending)
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(sim.log().is_empty(), "nothing before the interval");
    let stats = queue.snapshot().await.unwrap();
    assert_eq!((stats.pending, stats.done), (5, 0));
    assert_eq!(stats.oldest_age, Some(Duration::from_secs(30)));
    for id in &ids {
        let output = queue.wait(*id).await.unwrap();
        assert_eq!(output.status, 200);
        assert_eq!(output.via, Via::Call);
        let body: Value = serde_json::from_slice(&output.body).unwrap();
        assert!(body["choices"][0]["message"]["content"].is_string());
    }
    assert_eq!(sim.log().len(), 5);
    assert!(sim.log().iter().all(|e| e.at >= Duration::from_secs(60)));
    let stats = queue.snapshot().await.unwrap();
    assert_eq!(
        (stats.pending, stats.in_flight, stats.done, stats.calls),
        (0, 0, 5, 5)
    );
    // No secret reached the disk.
    queue.shutdown().await;
    drop(queue);
    let raw = std::fs::read(&path).unwrap();
    assert!(!raw.windows(15).any(|w| w == b"sk-never-stored"));
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_max_age_goes_alone() {
    let sim = sim("");
    let dir = store_dir("age");
    let queue = open(&sim, &dir, config(3600), None).await;
    let patient = queue.submit(chat(0)).await.unwrap();
    let urgent = queue
        .submit_with(
            chat(1),
            JobOptions {
                max_age: Some(Duration::from_secs(2)),
                ..JobOptions::default()
            },
        )
        .await
        .unwrap();
    let start = Instant::now();
    queue.wait(urgent).await.unwrap();
    let waited = start.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(3)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(
        queue.status(patient).await.unwrap(),
        Some(JobStatus::Pending)
    );
    // The queue's own max age (5 min) sends the other one.
    queue.wait(patient).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(300));
    assert!(start.elapsed() < Duration::from_secs(3600));
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn not_deferred_means_sent_at_once_and_keys_make_submission_idempotent() {
    let sim = sim("");
    let config = DeferredConfig {
        deferred: false,
        ..config(3600)
    };
    let dir = store_dir("now");
    let queue = open(&sim, &dir, config, None).await;
    let options = JobOptions {
        key: Some("doc-7".into()),
        ..JobOptions::default()
    };
    let first = queue.submit_with(chat(7), options.clone()).await.unwrap();
    let again = queue.submit_with(chat(7), options).await.unwrap();
    assert_eq!(first, again, "the same key is the same job");
    let start = Instant::now();
    queue.wait(first).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(sim.log().len(), 1);
    assert_eq!(
        queue.keyed_jobs().await.unwrap(),
        vec![("doc-7".to_owned(), first)]
    );
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_flush_through_the_openai_batch_api() {
    let sim = sim("[batch]\ncompletion_delay = \"20s\"\n");
    let dir = store_dir("openai");
    let queue = open(&sim, &dir, config(10), openai(&sim)).await;
    let mut completions = queue.completions();
    let ids = queue
        .submit_many((0..50).map(|n| (chat(n), JobOptions::default())).collect())
        .await
        .unwrap();
    for id in &ids {
        let output = queue.wait(*id).await.unwrap();
        assert_eq!(output.status, 200);
        assert_eq!(output.via, Via::BatchApi);
        let body: Value = serde_json::from_slice(&output.body).unwrap();
        assert_eq!(body["object"], "chat.completion");
    }
    let mut streamed = 0;
    while completions.try_recv().is_ok() {
        streamed += 1;
    }
    assert_eq!(streamed, 50, "every completion streamed out");
    let stats = queue.snapshot().await.unwrap();
    assert_eq!((stats.done, stats.batches, stats.batched_jobs), (50, 1, 50));
    assert_eq!(stats.calls_saved, 49);
    let routes: Vec<String> = sim.log().iter().map(|e| e.route.clone()).collect();
    assert!(
        !routes.iter().any(|r| r.contains("chat/completions")),
        "no plain call: {routes:?}"
    );
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_flush_through_the_anthropic_batch_api() {
    let sim = sim("[batch]\ncompletion_delay = \"20s\"\n");
    let dir = store_dir("anthropic");
    let queue = open(&sim, &dir, config(10), anthropic(&sim)).await;
    let ids = queue
        .submit_many(
            (0..20)
                .map(|n| (message(n), JobOptions::default()))
                .collect(),
        )
        .await
        .unwrap();
    for id in ids {
        let output = queue.wait(id).await.unwrap();
        assert_eq!(output.via, Via::BatchApi);
        let body: Value = serde_json::from_slice(&output.body).unwrap();
        assert_eq!(body["type"], "message");
    }
    assert_eq!(queue.snapshot().await.unwrap().calls_saved, 19);
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_a_submitted_batch_without_submitting_it_again() {
    let sim = sim("[batch]\ncompletion_delay = \"60s\"\n");
    let dir = store_dir("restart");
    let path = store_path(&dir);
    let open = || async {
        DeferredQueue::builder(&path, keyed(&sim))
            .config(config(10))
            .batch_api(OpenAiBatchApi::new(
                "https://api.openai.com",
                Secret::new("sk-batch"),
                net(&sim),
            ))
            .clock(PausedWall::new())
            .open()
            .await
            .unwrap()
    };
    let queue = open().await;
    let ids = queue
        .submit_many((0..10).map(|n| (chat(n), JobOptions::default())).collect())
        .await
        .unwrap();
    // The flush at 10 s submits the batch; stop while it runs.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(queue.snapshot().await.unwrap().in_flight, 10);
    queue.shutdown().await;
    drop(queue);
    let created = |sim: &SimService| {
        sim.log()
            .iter()
            .filter(|e| e.route.ends_with("/v1/batches") && e.route.starts_with("POST"))
            .count()
    };
    assert_eq!(created(&sim), 1);
    let queue = open().await;
    for id in ids {
        assert_eq!(queue.wait(id).await.unwrap().via, Via::BatchApi);
    }
    assert_eq!(
        created(&sim),
        1,
        "polled again by its id, never created twice"
    );
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_file_that_is_not_a_queue_is_refused_and_left_alone() {
    let sim = sim("");
    let dir = store_dir("corrupt");
    let path = store_path(&dir);
    // A truncated queue: a real one, cut in half.
    let queue = DeferredQueue::builder(&path, keyed(&sim))
        .clock(PausedWall::new())
        .open()
        .await
        .unwrap();
    queue.submit(chat(0)).await.unwrap();
    queue.shutdown().await;
    drop(queue);
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let before = std::fs::read(&path).unwrap();
    let error = DeferredQueue::builder(&path, keyed(&sim))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unreadable { .. }), "{error}");
    assert!(error.to_string().contains("left untouched"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "never overwritten");
    // Some other file.
    let other = path.with_file_name("notes.txt");
    std::fs::write(&other, b"shopping list").unwrap();
    let error = DeferredQueue::builder(&other, keyed(&sim))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unreadable { .. }), "{error}");
    assert_eq!(std::fs::read(&other).unwrap(), b"shopping list");
}

#[tokio::test(start_paused = true)]
async fn an_expired_batch_answers_part_and_the_rest_goes_again() {
    // Each batch expires halfway: half its requests are answered.
    let sim = sim("[batch]\ncompletion_delay = \"20s\"\nexpire_after = \"10s\"\n");
    let dir = store_dir("expire");
    let queue = open(&sim, &dir, config(10), openai(&sim)).await;
    let ids = queue
        .submit_many((0..20).map(|n| (chat(n), JobOptions::default())).collect())
        .await
        .unwrap();
    let mut via = Vec::new();
    for id in &ids {
        let output = queue.wait(*id).await.unwrap();
        assert_eq!(output.status, 200);
        via.push(output.via);
    }
    let by_batch = via.iter().filter(|v| **v == Via::BatchApi).count();
    let stats = queue.snapshot().await.unwrap();
    println!("{stats:?}");
    // 20 → 10 answered, 10 again → 5, 5 again → 2; the 3 left unrun three times go alone.
    assert_eq!(stats.batches, 3);
    assert_eq!(by_batch, 17);
    assert_eq!(stats.calls, 3);
    assert_eq!((stats.done, stats.failed), (20, 0));
    let batches = sim.batches();
    assert!(batches.iter().all(|b| b.status == "expired"), "{batches:?}");
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failed_uploads_lose_nothing() {
    let sim = sim("[batch]\nupload_error_rate = 1.0\n");
    let config = DeferredConfig {
        max_age: Duration::from_secs(120),
        ..config(30)
    };
    let dir = store_dir("upload");
    let queue = open(&sim, &dir, config, openai(&sim)).await;
    let ids = queue
        .submit_many((0..10).map(|n| (chat(n), JobOptions::default())).collect())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = queue.snapshot().await.unwrap();
    assert!(stats.submit_failures >= 3, "{stats:?}");
    assert_eq!(stats.pending, 10, "back to pending, not lost: {stats:?}");
    assert_eq!(stats.batches, 0);
    // Past their max age they go as plain calls.
    for id in ids {
        assert_eq!(queue.wait(id).await.unwrap().via, Via::Call);
    }
    assert!(sim.batches().is_empty());
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_anthropic_batch_answers_part_and_the_rest_goes_again() {
    let sim = sim("[batch]\ncompletion_delay = \"20s\"\nexpire_after = \"10s\"\n");
    let config = DeferredConfig {
        max_attempts: 2,
        ..config(10)
    };
    let dir = store_dir("anthropic-expire");
    let queue = open(&sim, &dir, config, anthropic(&sim)).await;
    let ids = queue
        .submit_many(
            (0..8)
                .map(|n| (message(n), JobOptions::default()))
                .collect(),
        )
        .await
        .unwrap();
    for id in ids {
        assert_eq!(queue.wait(id).await.unwrap().status, 200);
    }
    let stats = queue.snapshot().await.unwrap();
    // 8 → 4 answered, 4 again → 2 answered; the 2 left unrun twice go alone.
    assert_eq!((stats.batches, stats.batched_jobs, stats.calls), (2, 6, 2));
    queue.shutdown().await;
}
