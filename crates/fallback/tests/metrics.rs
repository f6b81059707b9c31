//! With the `metrics` feature the fallback layer counts the answers it gave, by trigger.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::error::CircuitOpen;
use tollgate_fallback::FallbackLayer;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_fallback_"])
}

fn chat() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#,
        )))
        .expect("a request")
}

#[tokio::test(start_paused = true)]
async fn fallback_answers_by_trigger() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let open = service_fn(|_: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, BoxError>(Box::new(CircuitOpen::new(None)))
    });
    let fallback = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(FallbackLayer::new(fallback))
        .service(open);
    for _ in 0..2 {
        assert_eq!(service.clone().oneshot(chat()).await.unwrap().status(), 200);
    }

    assert_eq!(
        recorded(&snapshotter),
        BTreeMap::from([(
            "tollgate_fallback_answers_total{trigger=circuit_open}".to_owned(),
            "counter 2".to_owned()
        )])
    );
}
