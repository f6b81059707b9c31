//! One client request: check its key, buffer its body, swap its credentials for the upstream
//! key, send it through the stack, and hand back the upstream's answer as it arrives — status,
//! headers and body untouched, a stream frame by frame — or the gateway's own answer when the
//! stack refused to send it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use http_body_util::Full;
use tokio::time::Instant;
use tollgate::cache::Tenant;
use tollgate::{LlmBody, LlmService};
use tollgate_core::EndpointKind;
use tollgate_core::credential::without_key_param;
use tower::ServiceExt;

use super::admission::{BodyBudget, BodyError, KeyShares};
use super::config::ClientKeys;
use super::headers::{ForwardedHeaders, filter_response, path_problem};
use super::metrics::{Metrics, route_index};
use super::refusal::{Dialect, Refusal, chain, refusal_of};
use super::relay::deliver;
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
    /// Each key's cache tenant (a digest prefix), by the key's index.
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) shares: Arc<KeyShares>,
    pub(crate) bodies: BodyBudget,
    pub(crate) forward_headers: ForwardedHeaders,
    pub(crate) send_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

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
        let key = match presented_key(request.headers()).and_then(|key| self.clients.find(key)) {
            Some(index) => Some(index),
            None if !self.clients.required() => None,
            None => {
                return self.refuse(
                    dialect,
                    Refusal::Unauthorized,
                    "a valid gateway key is required (Authorization: Bearer <key>, or x-api-key)",
                    None,
                );
            }
        };
        if let Some(problem) = path_problem(request.uri().path()) {
            return self.refuse(dialect, Refusal::BadRequest, problem, None);
        }
        let place = match key.map(|index| self.shares.take(index)) {
            Some(None) => {
                let share = self.shares.max().unwrap_or_default();
                return self.refuse(
                    dialect,
                    Refusal::KeyBusy,
                    &format!(
                        "this gateway key already has {share} requests in flight \
                         (server.max_in_flight_per_key)"
                    ),
                    Some(Duration::from_secs(1)),
                );
            }
            Some(Some(place)) => Some(place),
            None => None,
        };
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let (body, body_bytes) = match self.bodies.read(body, declared).await {
            Ok(read) => read,
            Err(BodyError::TooLarge) => {
                return self.refuse(
                    dialect,
                    Refusal::BodyTooLarge,
                    &format!(
                        "the request body is larger than the {} byte limit",
                        self.bodies.max_body_bytes()
                    ),
                    None,
                );
            }
            Err(BodyError::TooSlow(limit)) => {
                return self.refuse(
                    dialect,
                    Refusal::BodyTimeout,
                    &format!(
                        "the request body did not arrive within {limit:?} \
                         (server.body_read_timeout)"
                    ),
                    None,
                );
            }
            Err(BodyError::Broken(error)) => {
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
        let mut upstream = match self.upstream_request(parts, body) {
            Ok(request) => request,
            Err(message) => return self.refuse(dialect, Refusal::BadRequest, &message, None),
        };
        // Each key's cached answers are its own.
        if let Some(index) = key {
            upstream
                .extensions_mut()
                .insert(self.tenants[index].clone());
        }
        let answer = self.llm.clone().oneshot(upstream).await;
        // The request body is no longer needed: its bytes go back to the budget.
        drop(body_bytes);
        match answer {
            Ok(response) => self.client_response(dialect, response, place).await,
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
    /// client's allowed headers (never its credentials), with the upstream key.
    fn upstream_request(
        &self,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let path = parts.uri.path();
        // A Gemini-style key in the query never goes upstream.
        let query = match parts.uri.query() {
            None => String::new(),
            Some(query) => match without_key_param(query) {
                None => format!("?{query}"),
                Some(kept) if kept.is_empty() => String::new(),
                Some(kept) => format!("?{kept}"),
            },
        };
        let path_and_query = format!("{}{path}{query}", self.prefix);
        let path_and_query = PathAndQuery::try_from(path_and_query)
            .map_err(|e| format!("the request path is not valid ({e})"))?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| format!("the request path is not valid ({e})"))?;
        let mut headers = self.forward_headers.filter(&parts.headers);
        if let Some((name, value)) = &self.credential {
            headers.insert(name.clone(), value.clone());
        }
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// The upstream's response for the client: its status, headers (rate limits,
    /// `retry-after`, request ids; never cookies nor organisation ids) and body, read whole or
    /// relayed at the client's pace within the send timeout (see [`deliver`]); the key's place
    /// in flight is held until the upstream body is done with.
    async fn client_response<P: Send + 'static>(
        &self,
        dialect: Dialect,
        response: http::Response<LlmBody>,
        place: P,
    ) -> Response {
        let (mut parts, body) = response.into_parts();
        filter_response(&mut parts.headers);
        let body = match deliver(body, self.send_timeout, place).await {
            Ok(body) => body,
            Err(error) => {
                let message = format!("the upstream's answer broke off: {}", chain(error.as_ref()));
                tracing::warn!(error = %message, "no whole answer from the upstream");
                return self.refuse(dialect, Refusal::Unreachable, &message, None);
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = parts.status;
        *response.headers_mut() = parts.headers;
        response
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
}
