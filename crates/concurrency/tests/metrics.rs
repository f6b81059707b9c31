//! With the `metrics` feature the limit times each call's wait for a permit and counts queue
//! timeouts, per partition.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_concurrency::{ConcurrencyLimitLayer, Priority};
use tollgate_core::error::QueueTimeout;
use tower::{Layer, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_concurrency_"])
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn request(priority: Priority) -> Request<()> {
    let mut request = Request::new(());
    request.extensions_mut().insert(priority);
    request
}

#[tokio::test(start_paused = true)]
async fn queue_waits_and_timeouts_per_partition() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let upstream = service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let service = ConcurrencyLimitLayer::new(2)
        .with_partitions(0.5)
        .with_queue_timeout(Duration::from_secs(5))
        .layer(upstream);

    // The one interactive permit, held by the first response's body.
    let first = service
        .clone()
        .oneshot(request(Priority::Interactive))
        .await
        .unwrap();
    let second = tokio::spawn(service.clone().oneshot(request(Priority::Interactive)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(first);
    let second = second.await.unwrap().unwrap();
    // Held by the second: the third times out after 5 s.
    let third = service
        .clone()
        .oneshot(request(Priority::Interactive))
        .await;
    assert!(third.unwrap_err().is::<QueueTimeout>());
    // The batch partition is free.
    service
        .clone()
        .oneshot(request(Priority::Batch))
        .await
        .unwrap();
    drop(second);

    assert_eq!(
        recorded(&snapshotter),
        expect(&[
            (
                "tollgate_concurrency_queue_timeouts_total{priority=batch}",
                "counter 0"
            ),
            (
                "tollgate_concurrency_queue_timeouts_total{priority=interactive}",
                "counter 1"
            ),
            (
                "tollgate_concurrency_queue_wait_seconds{priority=batch}",
                "histogram [0.0]"
            ),
            (
                "tollgate_concurrency_queue_wait_seconds{priority=interactive}",
                "histogram [0.0, 3.0]"
            ),
        ])
    );
}
