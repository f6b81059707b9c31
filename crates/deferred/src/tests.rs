//! The retention and the answers the store refuses, under paused time: these tests reach into
//! the store (its write-refusal hook, its tables), so they live beside it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tempfile::TempDir;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;
use tollgate_core::{Clock, Secret};
use tollgate_sim::{SimConfig, SimService};

use super::*;

/// Wall-clock time that follows tokio's (paused) clock.
#[derive(Clone)]
struct PausedWall {
    base: SystemTime,
    start: Instant,
}

impl Clock for PausedWall {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

fn paused_wall() -> PausedWall {
    PausedWall {
        base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        start: Instant::now(),
    }
}

/// An upstream that answers every call at once, numbering them.
fn counting(calls: &Arc<AtomicUsize>) -> Transport {
    let calls = calls.clone();
    transport(tower::service_fn(move |_: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "{{\"answer\": {n}}}"
            )))))
        }
    }))
}

fn store_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tollgate-deferred-unit-{name}-"))
        .tempdir()
        .unwrap()
}

fn chat(n: usize) -> Request<Bytes> {
    let body = format!(
        r#"{{"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{{"role": "user", "content": "q{n}"}}]}}"#
    );
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Bytes::from(body))
        .unwrap()
}

async fn open(dir: &TempDir, transport: Transport, config: DeferredConfig) -> DeferredQueue {
    DeferredQueue::builder(dir.path().join("queue.redb"), transport)
        .config(config)
        .clock(paused_wall())
        .open()
        .await
        .unwrap()
}

/// Plain calls sent at once.
fn at_once() -> DeferredConfig {
    DeferredConfig {
        deferred: false,
        ..DeferredConfig::default()
    }
}

fn refuse_answers(queue: &DeferredQueue, writes: u32) {
    queue
        .shared
        .store
        .refuse_answers
        .store(writes, Ordering::SeqCst);
}

/// The completions received so far, by job.
fn drain(completions: &mut broadcast::Receiver<Completion>) -> Vec<JobId> {
    let mut ids = Vec::new();
    loop {
        match completions.try_recv() {
            Ok(completion) => ids.push(completion.id),
            Err(TryRecvError::Empty) => return ids,
            Err(error) => panic!("{error}"),
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// A job's answer, which must come within the hour (an answer dropped would never come).
async fn answer(queue: &DeferredQueue, id: JobId) -> JobOutput {
    tokio::time::timeout(60 * MINUTE, queue.wait(id))
        .await
        .expect("answered within the hour")
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn ended_jobs_are_deleted_after_the_retention_and_not_before() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dir = store_dir("retention");
    let config = DeferredConfig {
        interval: Duration::from_secs(24 * 3600),
        max_age: Duration::from_secs(48 * 3600),
        retention: 60 * MINUTE,
        ..DeferredConfig::default()
    };
    let queue = open(&dir, counting(&calls), config).await;
    let start = Instant::now();
    let keyed = JobOptions {
        key: Some("doc-1".into()),
        ..JobOptions::default()
    };
    let first = queue.submit_with(chat(1), keyed).await.unwrap();
    queue.flush();
    queue.wait(first).await.unwrap();
    tokio::time::sleep_until(start + 30 * MINUTE).await;
    let second = queue.submit(chat(2)).await.unwrap();
    queue.flush();
    queue.wait(second).await.unwrap();
    tokio::time::sleep_until(start + 40 * MINUTE).await;
    let waiting = queue.submit(chat(3)).await.unwrap();

    // Just before the first's retention runs out, everything is there.
    tokio::time::sleep_until(start + 59 * MINUTE).await;
    assert!(matches!(
        queue.status(first).await.unwrap(),
        Some(JobStatus::Done(_))
    ));
    // Past it, the first is gone — record, request, answer and key; the others stay.
    tokio::time::sleep_until(start + 61 * MINUTE).await;
    assert_eq!(queue.status(first).await.unwrap(), None);
    assert!(matches!(queue.wait(first).await, Err(JobError::Unknown(_))));
    let store = queue.shared.store.clone();
    assert!(store.body(first.0).unwrap().is_empty());
    assert_eq!(store.result(first.0).unwrap(), None);
    assert!(queue.keyed_jobs().await.unwrap().is_empty());
    assert!(matches!(
        queue.status(second).await.unwrap(),
        Some(JobStatus::Done(_))
    ));
    assert_eq!(
        queue.status(waiting).await.unwrap(),
        Some(JobStatus::Pending)
    );
    // The second goes a retention after it ended; a pending job never does.
    tokio::time::sleep_until(start + 91 * MINUTE).await;
    assert_eq!(queue.status(second).await.unwrap(), None);
    assert_eq!(
        queue.status(waiting).await.unwrap(),
        Some(JobStatus::Pending)
    );
    let stats = queue.snapshot().await.unwrap();
    assert_eq!((stats.done, stats.pending), (2, 1), "counters are kept");
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_store_refuses_is_written_on_a_later_pass_and_delivered_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dir = store_dir("refused");
    let queue = open(&dir, counting(&calls), at_once()).await;
    let mut completions = queue.completions();
    refuse_answers(&queue, 1);
    let id = queue.submit(chat(1)).await.unwrap();

    // Answered, but the disk is full: nobody sees the answer before the store has it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(queue.status(id).await.unwrap(), Some(JobStatus::InFlight));
    assert_eq!(queue.snapshot().await.unwrap().unwritten, 1);
    assert!(drain(&mut completions).is_empty());

    // A later pass writes it.
    let output = answer(&queue, id).await;
    assert_eq!(output.body, Bytes::from_static(b"{\"answer\": 1}"));
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(drain(&mut completions), vec![id], "announced once");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never sent again");
    let stats = queue.snapshot().await.unwrap();
    assert_eq!((stats.done, stats.unwritten), (1, 0));
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_keeps_refusing_is_tried_with_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dir = store_dir("backoff");
    let queue = open(&dir, counting(&calls), at_once()).await;
    refuse_answers(&queue, 4);
    let start = Instant::now();
    let id = queue.submit(chat(1)).await.unwrap();
    answer(&queue, id).await;
    // Refused at once, then again 1 s, 2 s and 4 s later; written 8 s after that, at 15 s
    // of paused time.
    let waited = start.elapsed();
    assert!(
        (Duration::from_secs(15)..Duration::from_secs(16)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    queue.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn past_the_memory_bound_a_refused_answer_sends_its_job_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dir = store_dir("bound");
    let config = DeferredConfig {
        max_unwritten_bytes: 0,
        ..at_once()
    };
    let queue = open(&dir, counting(&calls), config).await;
    let mut completions = queue.completions();
    refuse_answers(&queue, 1);
    let id = queue.submit(chat(1)).await.unwrap();
    let output = answer(&queue, id).await;
    assert_eq!(
        output.body,
        Bytes::from_static(b"{\"answer\": 2}"),
        "the answer that could not be kept was asked again"
    );
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(drain(&mut completions), vec![id], "announced once");
    queue.shutdown().await;
}

fn sim() -> SimService {
    SimService::new(
        SimConfig::from_toml(
            "seed = 3\n[latency]\ntime_to_first_token = \"100ms\"\nper_output_token = \"1ms\"\n\
             [batch]\ncompletion_delay = \"20s\"\n",
        )
        .unwrap(),
    )
    .unwrap()
}

fn net(sim: &SimService) -> Transport {
    transport(
        tower::ServiceBuilder::new()
            .map_err(|never: Infallible| -> tollgate_core::BoxError { match never {} })
            .service(sim.clone()),
    )
}

async fn batch_queue(sim: &SimService, dir: &TempDir, config: DeferredConfig) -> DeferredQueue {
    let api = OpenAiBatchApi::new("https://api.openai.com", Secret::new("sk-batch"), net(sim));
    DeferredQueue::builder(dir.path().join("queue.redb"), net(sim))
        .config(config)
        .batch_api(api)
        .clock(paused_wall())
        .open()
        .await
        .unwrap()
}

fn batch_config(max_unwritten_bytes: usize) -> DeferredConfig {
    DeferredConfig {
        interval: Duration::from_secs(10),
        poll_interval: Duration::from_secs(1),
        max_unwritten_bytes,
        ..DeferredConfig::default()
    }
}

/// The batch's results are refused once; whether they are kept in memory (`bound` large) or
/// read again from the provider (`bound` 0), every job is answered by the one batch, once.
async fn refused_batch_results(name: &str, bound: usize) -> SimService {
    let sim = sim();
    let dir = store_dir(name);
    let queue = batch_queue(&sim, &dir, batch_config(bound)).await;
    let mut completions = queue.completions();
    refuse_answers(&queue, 1);
    let ids = queue
        .submit_many((0..10).map(|n| (chat(n), JobOptions::default())).collect())
        .await
        .unwrap();
    for id in &ids {
        assert_eq!(answer(&queue, *id).await.via, Via::BatchApi);
    }
    tokio::time::sleep(10 * MINUTE).await;
    let mut announced = drain(&mut completions);
    announced.sort();
    assert_eq!(announced, ids, "each announced once");
    let stats = queue.snapshot().await.unwrap();
    assert_eq!((stats.done, stats.batches, stats.calls), (10, 1, 0));
    queue.shutdown().await;
    sim
}

#[tokio::test(start_paused = true)]
async fn refused_batch_results_kept_in_memory_are_settled_once() {
    let sim = refused_batch_results("batch-kept", 64 << 20).await;
    let reads = sim
        .log()
        .iter()
        .filter(|e| e.route.contains("/content"))
        .count();
    assert_eq!(reads, 1, "{:?}", sim.log());
}

#[tokio::test(start_paused = true)]
async fn refused_batch_results_past_the_bound_are_read_again() {
    let sim = refused_batch_results("batch-reread", 0).await;
    let reads = sim
        .log()
        .iter()
        .filter(|e| e.route.contains("/content"))
        .count();
    assert_eq!(reads, 2, "{:?}", sim.log());
}
