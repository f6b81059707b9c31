//! The `Service` contract with `tower_test::mock`: readiness is the inner service's, and the
//! fallback is neither readied nor called while the upstream answers — then readied and called
//! with the same request when it fails.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio_test::{assert_pending, assert_ready_ok};
use tollgate_core::error::CircuitOpen;
use tollgate_fallback::FallbackLayer;
use tower_test::mock;

type Req = Request<Full<Bytes>>;
type Rsp = Response<Full<Bytes>>;

/// A request's extension the fallback must see again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Marker(u32);

fn request() -> Req {
    let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
    request.extensions_mut().insert(Marker(7));
    request
}

#[tokio::test(start_paused = true)]
async fn the_fallback_is_left_alone_while_the_upstream_answers() {
    // A fallback that is never ready: touching it on the happy path would hang the call.
    let (fallback, mut fallback_handle) = mock::pair::<Req, Rsp>();
    fallback_handle.allow(0);
    let (mut service, mut handle) = mock::spawn_layer::<Req, Rsp, _>(FallbackLayer::new(fallback));

    handle.allow(0);
    assert_pending!(service.poll_ready());
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());

    let call = tokio::spawn(service.call(request()));
    let (_, reply) = handle.next_request().await.expect("the request");
    reply.send_response(Response::new(Full::new(Bytes::from_static(b"upstream"))));
    let response = call.await.unwrap().unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "upstream");

    // An open circuit: now the fallback is readied and called, with the same request.
    fallback_handle.allow(1);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let call = tokio::spawn(service.call(request()));
    let (_, reply) = handle.next_request().await.expect("the request");
    reply.send_error(CircuitOpen::new(None));
    let (seen, reply) = fallback_handle
        .next_request()
        .await
        .expect("the fallback's request");
    assert!(
        seen.extensions().get::<Marker>() == Some(&Marker(7)),
        "the original extensions"
    );
    reply.send_response(Response::new(Full::new(Bytes::from_static(b"fallback"))));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["x-tollgate-degraded"], "circuit_open");
}
