//! Failover sends a request to a second member only when sending it again is safe: a request
//! the first member may have processed (its connection broke after sending) goes elsewhere only
//! if it is a read, or billed and the pool opted in; an upload or a batch creation only when
//! the first member surely did not process it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::{BoxError, Secret};
use tollgate_pool::{Member, Policy, Pool, PoolBuilder, Served};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

type Inner = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, BoxError>;

/// A member that fails every call with `error()`, counting them.
fn failing(error: fn() -> BoxError, calls: &Arc<AtomicUsize>) -> Inner {
    let calls = calls.clone();
    BoxCloneSyncService::new(service_fn(move |_: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Err::<Response<Full<Bytes>>, BoxError>(error()) }
    }))
}

/// A member that answers 200, counting its calls.
fn healthy(calls: &Arc<AtomicUsize>) -> Inner {
    let calls = calls.clone();
    BoxCloneSyncService::new(service_fn(move |_: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}")))) }
    }))
}

fn reset() -> BoxError {
    Box::new(io::Error::from(io::ErrorKind::ConnectionReset))
}

fn refused() -> BoxError {
    Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))
}

fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
    let body: &'static [u8] = match (&method, path) {
        (&Method::GET, _) => b"",
        (_, "/v1/files") => {
            b"--b\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b--\r\n"
        }
        _ => br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    };
    Request::builder()
        .method(method)
        .uri(format!("https://api.openai.com{path}"))
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// Sends `request` to a pool of a member failing with `error` then a healthy one. Returns the
/// calls each saw and the answer: the status and the member, or the error.
async fn send(
    error: fn() -> BoxError,
    configure: impl FnOnce(PoolBuilder<Inner>) -> PoolBuilder<Inner>,
    request: Request<Full<Bytes>>,
) -> ((usize, usize), Result<String, BoxError>) {
    let (first, second) = (Arc::default(), Arc::default());
    let pool = configure(
        Pool::builder()
            .policy(Policy::Ordered)
            .member(
                Member::key("first", Secret::new("k1")),
                failing(error, &first),
            )
            .member(Member::key("second", Secret::new("k2")), healthy(&second)),
    )
    .build();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .service(pool);
    let answer = stack.oneshot(request).await.map(|response| {
        response
            .extensions()
            .get::<Served>()
            .map(|served| served.member.to_string())
            .unwrap_or_default()
    });
    (
        (first.load(Ordering::SeqCst), second.load(Ordering::SeqCst)),
        answer,
    )
}

fn is_reset(answer: &Result<String, BoxError>) -> bool {
    answer.as_ref().is_err_and(|error| {
        error
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionReset)
    })
}

#[tokio::test(start_paused = true)]
async fn a_billed_request_whose_connection_broke_fails_over_only_when_opted_in() {
    let chat = || request(Method::POST, "/v1/chat/completions");
    let (calls, answer) = send(reset, |b| b, chat()).await;
    assert_eq!(calls, (1, 0), "the first member may have billed it");
    assert!(is_reset(&answer), "{answer:?}");

    let (calls, answer) = send(reset, |b| b.resend_unanswered(true), chat()).await;
    assert_eq!(calls, (1, 1));
    assert_eq!(answer.unwrap(), "second");
}

#[tokio::test(start_paused = true)]
async fn an_upload_whose_connection_broke_never_fails_over() {
    for path in ["/v1/files", "/v1/batches"] {
        let (calls, answer) = send(
            reset,
            |b| b.resend_unanswered(true),
            request(Method::POST, path),
        )
        .await;
        assert_eq!(
            calls,
            (1, 0),
            "{path}: a second member would create a second one"
        );
        assert!(is_reset(&answer), "{answer:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_never_sent_fails_over_on_every_endpoint() {
    for (method, path) in [
        (Method::POST, "/v1/files"),
        (Method::POST, "/v1/batches"),
        (Method::POST, "/v1/chat/completions"),
        (Method::GET, "/v1/models"),
    ] {
        let (calls, answer) = send(refused, |b| b, request(method, path)).await;
        assert_eq!(calls, (1, 1), "{path}");
        assert_eq!(answer.unwrap(), "second", "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_read_whose_connection_broke_fails_over() {
    let (calls, answer) = send(reset, |b| b, request(Method::GET, "/v1/models")).await;
    assert_eq!(calls, (1, 1));
    assert_eq!(answer.unwrap(), "second");
}
