//! `classify_error` on the errors a real hyper / hyper-util client raises over loopback: a
//! request that never left is a `ConnectError` (always safe to send again), one that may have
//! reached the server before the connection broke is `ConnectionLost`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tollgate_core::OutcomeKind;
use tollgate_core::classify::classify_error;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn post(uri: &str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[]}"#,
        )))
        .unwrap()
}

/// Reads one request (head and `content-length` body) from `stream`.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut chunk = [0; 1024];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed before sending its request");
        seen.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
            if seen.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
}

/// A server that reads one request and closes the connection without answering; `reset`
/// closes it with a TCP reset instead of a clean close. Returns its address and the request
/// it read.
async fn server_that_reads_and_hangs_up(reset: bool) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        if reset {
            // SO_LINGER 0: the close sends a reset; it does not block (nothing is left to send).
            #[allow(deprecated)]
            stream.set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(stream);
        request
    });
    (address, server)
}

#[tokio::test(start_paused = true)]
async fn a_closed_port_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let error = client()
        .request(post(&format!("http://{address}/v1/chat/completions")))
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(classify_error(&error).kind, OutcomeKind::ConnectError);
}

#[tokio::test(start_paused = true)]
async fn a_connection_closed_after_the_request_was_read_is_connection_lost() {
    let (address, server) = server_that_reads_and_hangs_up(false).await;
    let error = client()
        .request(post(&format!("{address}/v1/chat/completions")))
        .await
        .unwrap_err();
    let request = server.await.unwrap();
    assert!(
        request.starts_with("POST /v1/chat/completions"),
        "the server got the request: {request}"
    );
    assert!(!error.is_connect(), "{error:?}");
    assert_eq!(
        classify_error(&error).kind,
        OutcomeKind::ConnectionLost,
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reset_after_the_request_was_read_is_connection_lost() {
    let (address, server) = server_that_reads_and_hangs_up(true).await;
    let error = client()
        .request(post(&format!("{address}/v1/files")))
        .await
        .unwrap_err();
    server.await.unwrap();
    assert_eq!(
        classify_error(&error).kind,
        OutcomeKind::ConnectionLost,
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_the_client_refuses_to_send_are_connect_errors() {
    // A URI without a host (hyper-util's UserAbsoluteUriRequired).
    let error = client()
        .request(post("/v1/chat/completions"))
        .await
        .unwrap_err();
    assert_eq!(
        classify_error(&error).kind,
        OutcomeKind::ConnectError,
        "{error:?}"
    );
    // A version it cannot speak (UserUnsupportedVersion).
    let mut old = post("http://127.0.0.1:9/v1/chat/completions");
    *old.version_mut() = Version::HTTP_09;
    let error = client().request(old).await.unwrap_err();
    assert_eq!(
        classify_error(&error).kind,
        OutcomeKind::ConnectError,
        "{error:?}"
    );
    // A scheme its connector does not handle: the plain HTTP connector and an https URL.
    let error = client()
        .request(post("https://127.0.0.1:9/v1/chat/completions"))
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(classify_error(&error).kind, OutcomeKind::ConnectError);
}

#[tokio::test(start_paused = true)]
async fn a_request_canceled_before_it_was_sent_is_a_connect_error() {
    // A connection whose task is gone: hyper hands the request back unsent.
    let (near, _far) = tokio::io::duplex(1024);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(near))
            .await
            .unwrap();
    drop(connection);
    let error = sender.send_request(post("/v1/files")).await.unwrap_err();
    assert!(error.is_canceled(), "{error:?}");
    assert_eq!(classify_error(&error).kind, OutcomeKind::ConnectError);
}
