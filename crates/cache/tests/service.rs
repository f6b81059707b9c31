//! The `Service` contract, against `tower_test`'s mock: the cache is always ready and a hit
//! never waits on the upstream; the opt-in header is not forwarded; a call's error reaches a
//! lone caller as it is and every caller of a shared call as its source.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio_test::{assert_pending, assert_ready_ok};
use tollgate_cache::{CacheLayer, CacheStatus, SharedCallFailed};
use tollgate_core::{EndpointKind, LlmRequest, Provider};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

fn upstream() -> (Mock, Handle) {
    mock::pair()
}

/// An annotated chat request at `temperature`.
fn chat(temperature: f32) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"m","temperature":{temperature},"messages":[]}}"#);
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.temperature = Some(temperature);
    request.extensions_mut().insert(llm);
    request
}

fn answer(text: &'static str) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(text.as_bytes())))
}

/// The upstream's own error.
fn refused() -> std::io::Error {
    std::io::Error::other("refused")
}

#[tokio::test]
async fn a_hit_never_waits_on_the_upstream() {
    let (upstream, mut handle) = upstream();
    let mut cache = CacheLayer::default().layer(upstream);
    let first = tokio::spawn(cache.clone().oneshot(chat(0.0)));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(answer("stored"));
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.into_body().collect().await.unwrap().to_bytes(),
        "stored"
    );

    // The upstream takes nothing more; the cache is ready all the same and answers.
    handle.allow(0);
    let mut ready = tokio_test::task::spawn(std::future::poll_fn(|cx| cache.poll_ready(cx)));
    assert_ready_ok!(ready.poll());
    drop(ready);
    let mut hit = tokio_test::task::spawn(cache.call(chat(0.0)));
    let response = assert_ready_ok!(hit.poll());
    assert_eq!(response.extensions().get(), Some(&CacheStatus::Hit));
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "stored"
    );

    // A request that is not cacheable waits for the upstream.
    let mut bypass = tokio_test::task::spawn(cache.call(chat(0.7)));
    assert_pending!(bypass.poll());
}

#[tokio::test]
async fn the_opt_in_header_is_not_forwarded() {
    let (upstream, mut handle) = upstream();
    let cache = CacheLayer::default().layer(upstream);
    let mut request = chat(0.7);
    request
        .headers_mut()
        .insert("x-tollgate-cache", "force".parse().unwrap());
    request
        .headers_mut()
        .insert("x-keep", "yes".parse().unwrap());
    let call = tokio::spawn(cache.oneshot(request));
    let (sent, reply) = handle.next_request().await.unwrap();
    assert!(!sent.headers().contains_key("x-tollgate-cache"));
    assert_eq!(sent.headers()["x-keep"], "yes");
    reply.send_response(answer("forced"));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.extensions().get(), Some(&CacheStatus::Miss));
}

#[tokio::test]
async fn a_lone_caller_gets_the_error_as_it_is() {
    let (upstream, mut handle) = upstream();
    let cache = CacheLayer::default().layer(upstream);
    let call = tokio::spawn(cache.oneshot(chat(0.0)));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(refused());
    let error = call.await.unwrap().unwrap_err();
    assert!(error.is::<std::io::Error>(), "{error}");
}

#[tokio::test]
async fn callers_of_a_shared_call_get_its_error_as_the_source() {
    let (upstream, mut handle) = upstream();
    let layer = CacheLayer::default();
    let stats = layer.handle();
    let cache = layer.layer(upstream);
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(cache.clone().oneshot(chat(0.0))))
        .collect();
    let (_, reply) = handle.next_request().await.unwrap();
    // Every caller has joined before the answer.
    while stats.snapshot().coalesced < 2 {
        tokio::task::yield_now().await;
    }
    reply.send_error(refused());
    for call in calls {
        let error = call.await.unwrap().unwrap_err();
        let shared = error.downcast_ref::<SharedCallFailed>().expect("shared");
        let source = std::error::Error::source(shared).unwrap();
        assert!(source.is::<std::io::Error>());
        assert_eq!(
            error.to_string(),
            "the shared upstream call failed: refused"
        );
    }
    // Nothing else was sent.
    handle.allow(1);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request())
            .await
            .is_err()
    );
}
