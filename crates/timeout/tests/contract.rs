//! The `Service` contract with `tower_test::mock`: readiness is the inner service's, requests
//! reach it unchanged, answers and errors come back unchanged.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio_test::{assert_pending, assert_ready_ok};
use tollgate_core::BoxError;
use tollgate_core::error::CircuitOpen;
use tollgate_timeout::{TimeoutConfig, TimeoutLayer, Timeouts};
use tower_test::mock;

type Req = Request<Full<Bytes>>;
type Rsp = Response<Full<Bytes>>;

fn request() -> Req {
    let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
    request
        .extensions_mut()
        .insert(Timeouts::new().with_idle(Duration::from_secs(1)));
    request
}

#[tokio::test(start_paused = true)]
async fn the_timeout_layer_passes_readiness_requests_and_answers_through() {
    let layer = TimeoutLayer::new(TimeoutConfig::default()).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);

    handle.allow(0);
    assert_pending!(service.poll_ready());
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());

    let call = tokio::spawn(service.call(request()));
    let (seen, reply) = handle.next_request().await.expect("the request");
    assert_eq!(
        seen.extensions().get::<Timeouts>(),
        Some(&Timeouts::new().with_idle(Duration::from_secs(1)))
    );
    reply.send_response(Response::new(Full::new(Bytes::from_static(b"answer"))));
    let response = call.await.unwrap().unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "answer");

    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let call = tokio::spawn(service.call(request()));
    let (_, reply) = handle.next_request().await.expect("the request");
    reply.send_error(CircuitOpen::new(None));
    let error: BoxError = call.await.unwrap().unwrap_err();
    assert!(error.is::<CircuitOpen>(), "{error}");
}
