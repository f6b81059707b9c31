//! With the `metrics` feature the deferred queue reports how many jobs wait to be sent.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use serde_json::json;
use tollgate_core::{BoxError, Clock};
use tollgate_deferred::{DeferredConfig, DeferredQueue, JobOptions, transport};

/// This crate's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_deferred_"])
}

/// Wall-clock time that follows tokio's (paused) clock.
#[derive(Clone)]
struct PausedWall(tokio::time::Instant);

impl Clock for PausedWall {
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + self.0.elapsed()
    }
}

fn chat(n: usize) -> Request<Bytes> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("summarise document {n}")}]});
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_deferred_queue_reports_its_pending_jobs_after_each_round() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let sim = tollgate_sim::SimService::new(
        tollgate_sim::SimConfig::from_toml("[latency]\ntime_to_first_token = \"100ms\"\n").unwrap(),
    )
    .unwrap();
    let net = tower::ServiceBuilder::new()
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .service(sim);
    // Removed when dropped, after the queue (declared later, dropped first).
    let dir = tempfile::Builder::new()
        .prefix("tollgate-deferred-metrics-")
        .tempdir()
        .unwrap();
    let config = DeferredConfig {
        interval: Duration::from_secs(3600),
        ..DeferredConfig::default()
    };
    let queue = DeferredQueue::builder(dir.path().join("queue.redb"), transport(net))
        .config(config)
        .clock(PausedWall(tokio::time::Instant::now()))
        .open()
        .await
        .unwrap();
    // Three patient jobs and one that must go within 2 s: the round that sends it alone
    // leaves three pending.
    for n in 0..3 {
        queue.submit(chat(n)).await.unwrap();
    }
    let urgent = JobOptions {
        max_age: Some(Duration::from_secs(2)),
        ..JobOptions::default()
    };
    let urgent = queue.submit_with(chat(3), urgent).await.unwrap();
    queue.wait(urgent).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        recorded(&snapshotter),
        BTreeMap::from([(
            "tollgate_deferred_pending{}".to_owned(),
            "gauge 3".to_owned()
        )])
    );
    queue.shutdown().await;
}
