//! Which failed requests are sent again: a request the provider may have processed is resent
//! only when repeating it is safe (reads), or billed and the caller opted in; an upload or a
//! batch creation only when the failure proves it was not processed. Against `tower_test`
//! mocks, under paused time.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::error::CircuitOpen;
use tollgate_retry::{Backoff, RetryLayer};
use tower::ServiceBuilder;
use tower_test::mock;

/// What the mock upstream does with one attempt.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Fail(fn() -> BoxError),
}

fn reset() -> BoxError {
    Box::new(io::Error::from(io::ErrorKind::ConnectionReset))
}

fn refused() -> BoxError {
    Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))
}

fn timed_out() -> BoxError {
    Box::new(tower::timeout::error::Elapsed::new())
}

fn breaker_below() -> BoxError {
    Box::new(CircuitOpen::new(Some(Duration::from_secs(1))))
}

fn layer() -> RetryLayer {
    RetryLayer::new()
        .with_backoff(Backoff::Fixed(Duration::from_secs(1)))
        .with_seed(7)
}

fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
    let body: &'static [u8] = if path.ends_with("/files") {
        b"--b\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b--\r\n"
    } else if method == Method::GET {
        b""
    } else {
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#
    };
    Request::builder()
        .method(method)
        .uri(format!("https://api.openai.com{path}"))
        .header("authorization", "Bearer sk-test")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// Sends `request` through Annotate → `retry` → a mock that answers each attempt from
/// `script` (then 200). Returns how many attempts the mock saw, and the status or error.
async fn attempts(
    retry: RetryLayer,
    request: Request<Full<Bytes>>,
    script: &[Answer],
) -> (usize, Result<StatusCode, BoxError>) {
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(retry);
    let (mut service, mut handle) =
        mock::spawn_layer::<Request<Full<Bytes>>, Response<Full<Bytes>>, _>(stack);
    tokio_test::assert_ready_ok!(service.poll_ready::<Request<Full<Bytes>>>());
    let call = service.call(request);
    drop(service);
    tokio::pin!(call);
    let mut script = script.iter().copied();
    let mut seen = 0;
    loop {
        tokio::select! {
            result = &mut call => return (seen, result.map(|response| response.status())),
            next = handle.next_request() => {
                let Some((_, answer)) = next else {
                    continue;
                };
                seen += 1;
                match script.next().unwrap_or(Answer::Status(200)) {
                    Answer::Status(code) => answer.send_response(
                        Response::builder()
                            .status(code)
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap(),
                    ),
                    Answer::Fail(error) => answer.send_error(error()),
                }
            }
        }
    }
}

fn is_reset(result: &Result<StatusCode, BoxError>) -> bool {
    result.as_ref().is_err_and(|error| {
        error
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionReset)
    })
}

#[tokio::test(start_paused = true)]
async fn an_upload_whose_connection_was_reset_is_not_sent_again() {
    for retry in [layer(), layer().with_resend_unanswered(true)] {
        let (seen, result) = attempts(
            retry,
            request(Method::POST, "/v1/files"),
            &[Answer::Fail(reset)],
        )
        .await;
        assert_eq!(seen, 1, "a second upload would be a second file");
        assert!(is_reset(&result), "the caller gets the reset: {result:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn uploads_and_batch_creations_are_not_resent_after_a_500_or_a_timeout() {
    for path in ["/v1/files", "/v1/batches", "/v1/messages/batches"] {
        let (seen, result) =
            attempts(layer(), request(Method::POST, path), &[Answer::Status(500)]).await;
        assert_eq!(
            (seen, result.unwrap()),
            (1, StatusCode::INTERNAL_SERVER_ERROR),
            "{path}"
        );
        let (seen, result) = attempts(
            layer(),
            request(Method::POST, path),
            &[Answer::Fail(timed_out)],
        )
        .await;
        assert_eq!(seen, 1, "{path}");
        assert!(result.is_err(), "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_upload_that_was_surely_not_processed_is_sent_again() {
    let proofs = [
        Answer::Fail(refused),
        Answer::Fail(breaker_below),
        Answer::Status(429),
        Answer::Status(503),
        Answer::Status(529),
    ];
    for proof in proofs {
        for path in ["/v1/files", "/v1/batches"] {
            let (seen, result) = attempts(layer(), request(Method::POST, path), &[proof]).await;
            assert_eq!((seen, result.unwrap()), (2, StatusCode::OK), "{path}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_chat_completion_that_lost_its_connection_is_resent_only_when_opted_in() {
    let chat = || request(Method::POST, "/v1/chat/completions");
    let (seen, result) = attempts(layer(), chat(), &[Answer::Fail(reset)]).await;
    assert_eq!(seen, 1, "it may have been billed: not resent by default");
    assert!(is_reset(&result), "{result:?}");

    let opted_in = layer().with_resend_unanswered(true);
    let (seen, result) = attempts(opted_in, chat(), &[Answer::Fail(reset)]).await;
    assert_eq!((seen, result.unwrap()), (2, StatusCode::OK));

    // A timeout and a 500 are resent as before (the crate docs say what that may cost).
    for answer in [Answer::Fail(timed_out), Answer::Status(500)] {
        let (seen, result) = attempts(layer(), chat(), &[answer]).await;
        assert_eq!((seen, result.unwrap()), (2, StatusCode::OK));
    }
}

#[tokio::test(start_paused = true)]
async fn a_connect_error_is_retried_on_every_endpoint() {
    let requests = [
        (Method::POST, "/v1/files"),
        (Method::POST, "/v1/batches"),
        (Method::POST, "/v1/chat/completions"),
        (Method::POST, "/v1/embeddings"),
        (Method::POST, "/v1/anything"),
        (Method::GET, "/v1/models"),
    ];
    for (method, path) in requests {
        let (seen, result) =
            attempts(layer(), request(method, path), &[Answer::Fail(refused)]).await;
        assert_eq!((seen, result.unwrap()), (2, StatusCode::OK), "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_read_whose_connection_was_reset_is_retried() {
    for (method, path) in [
        (Method::GET, "/v1/models"),
        (Method::GET, "/v1/files/file-1/content"),
        (Method::POST, "/v1/messages/count_tokens"),
    ] {
        let (seen, result) = attempts(layer(), request(method, path), &[Answer::Fail(reset)]).await;
        assert_eq!((seen, result.unwrap()), (2, StatusCode::OK), "{path}");
    }
}
