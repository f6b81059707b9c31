//! With the `metrics` feature the retry layer counts retries by the outcome that caused them,
//! times the waits between attempts, counts why it gave up and the hedges it sent, labelled by
//! provider and model only.
#![cfg(feature = "metrics")]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_core::Deadline;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_retry::{Backoff, Hedge, HedgeAfter, HedgeWhen, RetryLayer};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_retry_"])
}

const SECRET: &str = "sk-retry-metrics-secret";

type Script = Arc<Mutex<VecDeque<(u16, u64)>>>;
type Stack = BoxCloneSyncService<Request<Full<Bytes>>, u16, tollgate_core::BoxError>;

/// Annotate → `layer` → Classify → an upstream answering statuses (after delays, in seconds)
/// from `script`; a 429 asks for a 2 s wait.
fn stack(layer: RetryLayer, script: &Script) -> Stack {
    let script = script.clone();
    let upstream = service_fn(move |_: Request<Full<Bytes>>| {
        let (status, delay) = script.lock().unwrap().pop_front().expect("scripted");
        async move {
            tokio::time::sleep(Duration::from_secs(delay)).await;
            let mut response = Response::builder().status(status);
            if status == 429 {
                response = response.header("retry-after", "2");
            }
            let response = response.body(Full::new(Bytes::from("{}")));
            Ok::<_, Infallible>(response.unwrap())
        }
    });
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(upstream);
    let service = ServiceExt::<Request<Full<Bytes>>>::map_response(service, |response| {
        response.status().as_u16()
    });
    BoxCloneSyncService::new(service)
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", format!("Bearer {SECRET}"))
        .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o"}"#)))
        .unwrap()
}

fn script(answers: &[(u16, u64)]) -> Script {
    Arc::new(Mutex::new(answers.iter().copied().collect()))
}

#[tokio::test(start_paused = true)]
async fn retries_waits_give_ups_and_hedges() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let layer = || {
        RetryLayer::new()
            .with_backoff(Backoff::Fixed(Duration::from_secs(1)))
            .with_max_attempts(3)
            .with_budget(1.0, 100, 100)
    };
    // Overloaded (waits 1 s of backoff), rate limited (waits the 2 s it asks), then a success.
    let answers = script(&[(503, 0), (429, 0), (200, 0)]);
    assert_eq!(
        stack(layer(), &answers).oneshot(request()).await.unwrap(),
        200
    );
    // Three server errors: two retries, then out of attempts.
    let answers = script(&[(500, 0), (500, 0), (500, 0)]);
    assert_eq!(
        stack(layer(), &answers).oneshot(request()).await.unwrap(),
        500
    );
    // The 1 s wait would pass the deadline.
    let answers = script(&[(500, 0)]);
    let mut hurried = request();
    hurried
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(500)));
    assert_eq!(
        stack(layer(), &answers).oneshot(hurried).await.unwrap(),
        500
    );
    // An empty budget allows no retry.
    let answers = script(&[(500, 0)]);
    let broke = layer().with_budget(0.0, 0, 0);
    assert_eq!(
        stack(broke, &answers).oneshot(request()).await.unwrap(),
        500
    );
    // A call still running after 2 s gets a backup, which answers first.
    let hedge = Hedge {
        after: HedgeAfter::Delay(Duration::from_secs(2)),
        when: HedgeWhen::Always,
    };
    let answers = script(&[(200, 60), (200, 1)]);
    let hedged = stack(layer().with_hedging(hedge), &answers);
    assert_eq!(hedged.oneshot(request()).await.unwrap(), 200);

    let scope = "model=gpt-4o,provider=openai";
    let recorded = recorded(&snapshotter);
    let expected = BTreeMap::from([
        (
            format!("tollgate_retry_attempts_total{{{scope},reason=overloaded}}"),
            "counter 1",
        ),
        (
            format!("tollgate_retry_attempts_total{{{scope},reason=rate_limited}}"),
            "counter 1",
        ),
        (
            format!("tollgate_retry_attempts_total{{{scope},reason=server_error}}"),
            "counter 2",
        ),
        (
            format!("tollgate_retry_backoff_seconds{{{scope}}}"),
            "histogram [1.0, 2.0, 1.0, 1.0]",
        ),
        (
            format!("tollgate_retry_gave_up_total{{{scope},why=attempts_exhausted}}"),
            "counter 1",
        ),
        (
            format!("tollgate_retry_gave_up_total{{{scope},why=budget_exhausted}}"),
            "counter 1",
        ),
        (
            format!("tollgate_retry_gave_up_total{{{scope},why=deadline}}"),
            "counter 1",
        ),
        (
            format!("tollgate_retry_hedges_total{{{scope}}}"),
            "counter 1",
        ),
    ]);
    let expected: BTreeMap<String, String> = expected
        .into_iter()
        .map(|(key, value)| (key, value.to_owned()))
        .collect();
    assert_eq!(recorded, expected);
    tollgate_testkit::metrics::assert_no_credential(&recorded, SECRET);
}
