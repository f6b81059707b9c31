//! With the `metrics` feature the timeout layer counts each limit that ran out, by provider and
//! model.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Answer, Ending, chat, read, upstream};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_timeout::{TimeoutConfig, TimeoutLayer, Timeouts};
use tower::{ServiceBuilder, ServiceExt};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_timeout_"])
}

/// Fixed limits: 1 s to the first byte, 2 s of silence, 3 s in all.
fn limits() -> Timeouts {
    Timeouts::new()
        .with_first_byte(Duration::from_secs(1))
        .with_idle(Duration::from_secs(2))
        .with_total(Duration::from_secs(3))
        .with_per_output_token(Duration::ZERO)
}

async fn run(answer: Answer) -> Result<(), BoxError> {
    let (upstream, _) = upstream(answer);
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(TimeoutLayer::new(TimeoutConfig::default()).unwrap())
        .service(upstream);
    let mut request = chat(true, Some(100));
    request.extensions_mut().insert(limits());
    let response = service.oneshot(request).await?;
    read(response.into_body()).await.1
}

#[tokio::test(start_paused = true)]
async fn timeouts_by_limit() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // No headers within 1 s; a stream silent for 2 s; one still going after 3 s.
    assert!(run(Answer::hang()).await.is_err());
    assert!(
        run(Answer::stream(0, &[(0, "a"), (5_000, "b")], Ending::Finish))
            .await
            .is_err()
    );
    let steady = [
        (0, "a"),
        (1_000, "b"),
        (1_000, "c"),
        (1_000, "d"),
        (1_000, "e"),
    ];
    assert!(
        run(Answer::stream(0, &steady, Ending::Finish))
            .await
            .is_err()
    );
    // A clean stream: nothing.
    run(Answer::stream(0, &[(0, "a"), (500, "b")], Ending::Finish))
        .await
        .unwrap();

    let expired = |limit: &str| {
        format!("tollgate_timeout_expired_total{{limit={limit},model=gpt-4o-mini,provider=openai}}")
    };
    assert_eq!(
        recorded(&snapshotter),
        BTreeMap::from([
            (expired("first_byte"), "counter 1".to_owned()),
            (expired("idle"), "counter 1".to_owned()),
            (expired("total"), "counter 1".to_owned()),
        ])
    );
}
