//! With the `metrics` feature each scope reports its adaptive limit, its calls in flight and its
//! overload state as gauges, and counts its transitions and the requests its throttle shed,
//! labelled by provider and model only.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_concurrency::Priority;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::Overloaded;
use tollgate_core::{BoxError, CredentialId, EndpointKind, LlmRequest, Provider};
use tollgate_overload::{DetectorConfig, OverloadLayer, OverloadState};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_overload_"])
}

const SECRET: &str = "sk-overload-metrics-secret";

fn llm() -> LlmRequest {
    let mut llm = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
    llm.model = Some("claude-sonnet".into());
    llm.credential = Some(CredentialId::from_secret(SECRET.as_bytes()));
    llm
}

fn request(priority: Priority) -> Request<()> {
    let mut request = Request::new(());
    request.extensions_mut().insert(llm());
    request.extensions_mut().insert(priority);
    request
}

#[tokio::test(start_paused = true)]
async fn limit_in_flight_state_transitions_and_throttling() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // Answers 200, or 529 while `shedding` except every third call.
    let shedding = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (shed, seen) = (shedding.clone(), calls.clone());
    let upstream = service_fn(move |_: Request<()>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let status = if shed.load(Ordering::SeqCst) && n % 3 != 0 {
            529
        } else {
            200
        };
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let response = Response::builder().status(status);
            Ok::<_, BoxError>(response.body(Full::new(Bytes::from("{}"))).unwrap())
        }
    });
    let detector = DetectorConfig {
        window: Duration::from_secs(10),
        ..DetectorConfig::default()
    };
    let layer = OverloadLayer::new().with_seed(7).with_detector(detector);
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(upstream);
    let scope = llm().scope();
    // Whether a call was shed here, without reaching the upstream.
    let call = |priority| {
        let service = service.clone();
        let calls = calls.clone();
        async move {
            let before = calls.load(Ordering::SeqCst);
            match service.oneshot(request(priority)).await {
                Ok(response) => {
                    response.into_body().collect().await.unwrap();
                    false
                }
                Err(error) => error.is::<Overloaded>() && calls.load(Ordering::SeqCst) == before,
            }
        }
    };

    for _ in 0..20 {
        assert!(!call(Priority::Interactive).await);
    }
    let labels = "model=claude-sonnet,provider=anthropic";
    let gauge = |name: &str| format!("{name}{{{labels}}}");
    let throttled = |priority: &str| {
        format!(
            "tollgate_overload_throttled_total{{model=claude-sonnet,priority={priority},provider=anthropic}}"
        )
    };
    // A response whose body is still unread holds its call in flight.
    let held = service
        .clone()
        .oneshot(request(Priority::Interactive))
        .await
        .unwrap();
    let limit = handle.limit(&scope).unwrap();
    assert_eq!(
        recorded(&snapshotter),
        BTreeMap::from([
            (gauge("tollgate_overload_in_flight"), "gauge 1".to_owned()),
            (gauge("tollgate_overload_limit"), format!("gauge {limit}")),
            (gauge("tollgate_overload_state"), "gauge 0".to_owned()),
            (throttled("batch"), "counter 0".to_owned()),
            (throttled("interactive"), "counter 0".to_owned()),
        ])
    );
    drop(held);

    // Two calls in three shed upstream: Warning, then Critical, and the throttle sheds here.
    shedding.store(true, Ordering::SeqCst);
    let mut shed = [0_u64; 2];
    for _ in 0..300 {
        shed[0] += u64::from(call(Priority::Interactive).await);
    }
    for _ in 0..100 {
        shed[0] += u64::from(call(Priority::Interactive).await);
        shed[1] += u64::from(call(Priority::Batch).await);
    }
    assert!(shed[0] > 0 && shed[1] > 0, "{shed:?}");
    assert_eq!(handle.state(&scope), OverloadState::Critical);

    // A snapshot resets what it reads, gauges too: the in-flight gauge counts from the zero the
    // first one left, so the held call's end shows as -1.
    let mut expected = BTreeMap::from([
        (gauge("tollgate_overload_in_flight"), "gauge -1".to_owned()),
        (
            gauge("tollgate_overload_limit"),
            format!("gauge {}", handle.limit(&scope).unwrap()),
        ),
        (gauge("tollgate_overload_state"), "gauge 2".to_owned()),
        (throttled("interactive"), format!("counter {}", shed[0])),
        (throttled("batch"), format!("counter {}", shed[1])),
    ]);
    let mut transitions = BTreeMap::<String, u64>::new();
    while let Ok(event) = events.try_recv() {
        let key = format!(
            "tollgate_overload_transitions_total{{from={},{labels},to={}}}",
            event.from, event.to
        );
        *transitions.entry(key).or_default() += 1;
    }
    assert!(!transitions.is_empty());
    expected.extend(
        transitions
            .into_iter()
            .map(|(key, n)| (key, format!("counter {n}"))),
    );
    let recorded = recorded(&snapshotter);
    assert_eq!(recorded, expected);
    tollgate_testkit::metrics::assert_no_credential(&recorded, SECRET);
}
