//! One client request: check its key, buffer its body, swap its credentials for the upstream
//! key, send it through the stack, and hand back the upstream's answer as it arrives — status,
//! headers and body untouched, a stream frame by frame — or the gateway's own answer when the
//! stack refused to send it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::time::Instant;
use tollgate::{LlmBody, LlmService};
use tollgate_core::EndpointKind;
use tower::ServiceExt;

use super::config::ClientKeys;
use super::metrics::{Metrics, route_index};
use super::refusal::{Dialect, Refusal, chain, refusal_of};
use super::tls::is_certificate_error;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) llm: LlmService,
    pub(crate) handle: tollgate::StackHandle,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) prefix: String,
    /// The upstream key's header, marked sensitive.
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
    pub(crate) clients: ClientKeys,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: Arc<Metrics>,
}

/// Headers that carry a credential, the client's or anyone's: never forwarded.
const CREDENTIALS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1); `host` and `content-length`, which the client and
/// server on each side set for themselves; and `expect`, as the body is already read.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// `ANY /v1/*`.
pub(crate) async fn forward(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let route = route_index(request.uri().path());
    let access = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let response = gateway.forward(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    gateway.metrics.request(route, status, elapsed);
    if let Some((method, path)) = access {
        tracing::debug!(%method, path, status, ?elapsed, "request");
    }
    response
}

impl Gateway {
    async fn forward(&self, request: Request) -> Response {
        let dialect = Dialect::of(request.uri().path());
        if self.clients.required()
            && !presented_key(request.headers()).is_some_and(|key| self.clients.admits(key))
        {
            return self.refuse(
                dialect,
                Refusal::Unauthorized,
                "a valid gateway key is required (Authorization: Bearer <key>, or x-api-key)",
                None,
            );
        }
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<LengthLimitError>() => {
                return self.refuse(
                    dialect,
                    Refusal::BodyTooLarge,
                    &format!(
                        "the request body is larger than the {} byte limit",
                        self.max_body_bytes
                    ),
                    None,
                );
            }
            Err(error) => {
                tracing::debug!(%error, "could not read a request body");
                return self.refuse(
                    dialect,
                    Refusal::BadRequest,
                    "could not read the request body",
                    None,
                );
            }
        };
        // A body the provider would refuse as it stands costs no upstream call nor any of the
        // rate limit: the gateway answers the provider's 400 itself.
        if parts.method == Method::POST
            && takes_json(EndpointKind::from_path(parts.uri.path()))
            && let Some(message) = not_a_json_object(&body)
        {
            return self.refuse(dialect, Refusal::BadRequest, &message, None);
        }
        let upstream = match self.upstream_request(parts, body) {
            Ok(request) => request,
            Err(message) => return self.refuse(dialect, Refusal::BadRequest, &message, None),
        };
        match self.llm.clone().oneshot(upstream).await {
            Ok(response) => client_response(response),
            Err(error) => {
                let (refusal, wait) = refusal_of(error.as_ref());
                let mut message = chain(error.as_ref());
                if refusal == Refusal::Unreachable {
                    if is_certificate_error(error.as_ref()) {
                        message.push_str(
                            " (the upstream's certificate is not trusted: for a private CA, \
                             set upstream.ca_file)",
                        );
                    }
                    tracing::warn!(error = %message, "no response from the upstream");
                } else {
                    tracing::debug!(error = %message, "refused by the stack");
                }
                self.refuse(dialect, refusal, &message, wait)
            }
        }
    }

    /// The request as it goes upstream: the upstream's scheme, host and path prefix; the
    /// client's headers without credentials and hop-by-hop headers, with the upstream key.
    fn upstream_request(
        &self,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let path = parts.uri.path();
        let query = parts.uri.query().map(without_key_param).unwrap_or_default();
        let path_and_query = format!("{}{path}{query}", self.prefix);
        let path_and_query = PathAndQuery::try_from(path_and_query)
            .map_err(|e| format!("the request path is not valid ({e})"))?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| format!("the request path is not valid ({e})"))?;
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        for name in CREDENTIALS {
            headers.remove(name);
        }
        // Ask for an identity body: the stack reads error bodies and stream usage as they pass.
        headers.remove(header::ACCEPT_ENCODING);
        if let Some((name, value)) = &self.credential {
            headers.insert(name.clone(), value.clone());
        }
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    fn refuse(
        &self,
        dialect: Dialect,
        refusal: Refusal,
        message: &str,
        retry_after: Option<Duration>,
    ) -> Response {
        self.metrics.refusal(refusal);
        refusal.response(dialect, message, retry_after)
    }
}

/// Whether a POST to this endpoint carries a JSON object (file uploads are multipart; other
/// endpoints go through as they are).
fn takes_json(endpoint: EndpointKind) -> bool {
    matches!(
        endpoint,
        EndpointKind::ChatCompletions
            | EndpointKind::Responses
            | EndpointKind::Messages
            | EndpointKind::GenerateContent
            | EndpointKind::Embeddings
            | EndpointKind::Completions
            | EndpointKind::Batches
    )
}

/// Why `body` is not a JSON object, if it is not.
fn not_a_json_object(body: &[u8]) -> Option<String> {
    // JSON is UTF-8 (RFC 8259), and skipping a value does not check its strings.
    if let Err(error) = std::str::from_utf8(body) {
        return Some(format!("the request body is not UTF-8 ({error})"));
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(error) => Some(format!("the request body is not valid JSON ({error})")),
        Ok(_) if body.trim_ascii_start().first() != Some(&b'{') => {
            Some("the request body must be a JSON object".to_owned())
        }
        Ok(_) => None,
    }
}

/// The key a client presented: `Authorization: Bearer`, else `x-api-key` (Anthropic's SDKs),
/// else `api-key` (Azure's).
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.as_bytes();
        return value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value[7..].trim_ascii());
    }
    headers
        .get("x-api-key")
        .or_else(|| headers.get("api-key"))
        .map(|v| v.as_bytes().trim_ascii())
}

/// `?a=1&key=sk&b=2` → `?a=1&b=2`: a Gemini-style key in the query never goes upstream.
fn without_key_param(query: &str) -> String {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && *pair != "key" && !pair.starts_with("key="))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The upstream's response for the client: its status, headers (rate limits, `retry-after`,
/// request ids) and body as they came; the body is the stack's streaming body, so each frame
/// (each SSE event) goes out as soon as it arrives.
fn client_response(response: http::Response<LlmBody>) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_endpoint_needs_a_json_object() {
        assert_eq!(
            not_a_json_object(br#" {"model": "m", "n": [1, {"a": "\u00e9"}]}"#),
            None
        );
        for (body, says) in [
            (&b"this is { not json"[..], "not valid JSON"),
            (b"", "not valid JSON"),
            (b"{\"model\": \"m\"", "not valid JSON"),
            (b"{} {}", "not valid JSON"),
            (b"[1, 2, 3]", "must be a JSON object"),
            (b"\"text\"", "must be a JSON object"),
            (b"{\"model\": \"\xff\xfe\"}", "not UTF-8"),
        ] {
            let message = not_a_json_object(body).expect("refused");
            assert!(message.contains(says), "{body:?}: {message}");
        }
        assert!(takes_json(EndpointKind::from_path("/v1/chat/completions")));
        assert!(takes_json(EndpointKind::from_path("/v1/messages")));
        assert!(!takes_json(EndpointKind::from_path("/v1/files")));
        assert!(!takes_json(EndpointKind::from_path("/v1/models")));
    }

    #[test]
    fn only_bearer_x_api_key_or_api_key_present_a_key() {
        let key = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            presented_key(&headers).map(<[u8]>::to_vec)
        };
        assert_eq!(key("authorization", "Bearer tg-1"), Some(b"tg-1".to_vec()));
        assert_eq!(
            key("authorization", "bearer  tg-1 "),
            Some(b"tg-1".to_vec())
        );
        assert_eq!(key("authorization", "Basic dGc6MQ=="), None);
        assert_eq!(key("x-api-key", "tg-2"), Some(b"tg-2".to_vec()));
        assert_eq!(key("api-key", "tg-3"), Some(b"tg-3".to_vec()));
        assert_eq!(key("x-other", "tg-3"), None);
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-trace"),
            ("x-trace", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
        assert_eq!(without_key_param("alt=sse&key=sk-1"), "?alt=sse");
        assert_eq!(without_key_param("key=sk-1"), "");
        assert_eq!(without_key_param("a=1&keyring=2"), "?a=1&keyring=2");
    }
}
