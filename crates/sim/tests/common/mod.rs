//! Helpers shared by the simulator's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tollgate_sim::SimService;
use tower::ServiceExt;

/// A plain hyper client over HTTP/1.1.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A plain hyper client speaking HTTP/2 with prior knowledge (h2c).
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// The SSE events: (event name, data) pairs. Lines may end in `\r\n` (Gemini's do).
    pub fn events(&self) -> Vec<(String, String)> {
        let text = std::str::from_utf8(&self.body)
            .unwrap()
            .replace("\r\n", "\n");
        text.split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_owned();
                    }
                }
                (name, data)
            })
            .collect()
    }
}

/// A request to `path` with `key` (as a bearer token, or `x-api-key` for `/v1/messages`).
pub fn request(base: &str, path: &str, key: &str, body: &Value) -> Request<Full<Bytes>> {
    let mut builder =
        Request::post(format!("{base}{path}")).header("content-type", "application/json");
    builder = if path.starts_with("/v1/messages") {
        builder
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    } else {
        builder.header("authorization", format!("Bearer {key}"))
    };
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A POST of `body` to `base` + `path` (which may carry a query) with exactly `headers`.
pub fn post(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Request<Full<Bytes>> {
    let mut builder =
        Request::post(format!("{base}{path}")).header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A GET of `base` + `path` (which may carry a query) with `key`: a bearer token, or
/// `x-api-key` for `/v1/messages...`.
pub fn get(base: &str, path: &str, key: &str) -> Request<Full<Bytes>> {
    let builder = Request::get(format!("{base}{path}"));
    let builder = if path.starts_with("/v1/messages") {
        builder
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    } else {
        builder.header("authorization", format!("Bearer {key}"))
    };
    builder.body(Full::default()).unwrap()
}

/// A `multipart/form-data` upload to `/v1/files` of `content` as the `file` field.
pub fn upload(base: &str, key: &str, purpose: &str, content: &str) -> Request<Full<Bytes>> {
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{content}\r\n--XyZ--\r\n"
    );
    Request::post(format!("{base}/v1/files"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The JSON lines of a JSONL body.
pub fn jsonl(reply: &Reply) -> Vec<Value> {
    std::str::from_utf8(&reply.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sends over the network and reads the whole response.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Reply {
    read(
        client
            .request(request)
            .await
            .expect("the simulator answers"),
    )
    .await
}

/// Calls the simulator in-process and reads the whole response.
pub async fn call(sim: &SimService, request: Request<Full<Bytes>>) -> Reply {
    let response = sim.clone().oneshot(request).await;
    read(response.unwrap_or_else(|e: Infallible| match e {})).await
}

async fn read<B: http_body::Body>(response: http::Response<B>) -> Reply
where
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the body arrives whole")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn chat(model: &str, content: &str, max_tokens: u64) -> Value {
    serde_json::json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}]})
}
