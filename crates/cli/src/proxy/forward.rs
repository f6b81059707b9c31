//! One client request: check its key, buffer its body, swap its credentials for the upstream
//! key, send it through the stack, and hand back the upstream's answer as it arrives — status,
//! headers and body untouched, a stream frame by frame — or the gateway's own answer when the
//! stack refused to send it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::Full;
use tokio::time::Instant;
use tollgate::LlmBody;
use tollgate::cache::Tenant;
use tollgate::pool::{Adapter as _, Auth, Served};
use tollgate_core::body::EndOfStream;
use tollgate_core::credential::without_key_param;
use tollgate_core::{CredentialId, Deadline, EndpointKind};
use tower::ServiceExt;

use super::admission::{BodyBudget, BodyError};
use super::config::{Api, ProxyConfig};
use super::headers::{ForwardedHeaders, filter_response, path_problem};
use super::metrics::{Metrics, route_index};
use super::models;
use super::refusal::{Dialect, Refusal, chain, error_response, refusal_of};
use super::relay::deliver;
use super::routes::{Route, Routes, Routing, Target};
use super::tls::is_certificate_error;

/// The header naming the deployment (pool member) that answered a model group's request.
pub(crate) const DEPLOYMENT_HEADER: HeaderName = HeaderName::from_static("x-tollgate-deployment");

/// What an answer cost (`$0.0000615`), on answers read whole when the gateway keeps budgets.
pub(crate) const COST_HEADER: HeaderName = HeaderName::from_static("x-tollgate-cost-usd");

/// Tells the official OpenAI and Anthropic SDKs not to retry a refusal (they otherwise retry a
/// 429 after its `retry-after`).
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// A gateway key sent beside the client's own provider key (for passthrough groups).
const GATEWAY_KEY_HEADER: &str = "x-tollgate-key";

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// Who may call and where requests go; `SIGHUP` replaces them.
    pub(crate) routes: RwLock<Arc<Routes>>,
    pub(crate) bodies: BodyBudget,
    pub(crate) forward_headers: ForwardedHeaders,
    pub(crate) send_timeout: Duration,
    /// The deadline of a request through a model group.
    pub(crate) request_timeout: Duration,
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
    /// The gateway `config` describes, sending through `routes`.
    pub(crate) fn new(config: &ProxyConfig, routes: Routes, metrics: Arc<Metrics>) -> Self {
        let limits = &config.limits;
        Self {
            routes: RwLock::new(Arc::new(routes)),
            bodies: BodyBudget::new(
                limits.max_body_bytes_in_flight,
                limits.max_body_bytes,
                limits.body_read_timeout,
            ),
            forward_headers: limits.forward_headers.clone(),
            send_timeout: limits.send_timeout,
            request_timeout: config.request_timeout,
            metrics,
        }
    }

    /// The routes now (a reload may replace them; a request keeps the ones it started with).
    pub(crate) fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `routes` in place for the requests that start from now on.
    pub(crate) fn replace(&self, routes: Routes) {
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routes);
    }

    async fn forward(&self, request: Request) -> Response {
        let routes = self.routes();
        let dialect = Dialect::of(request.uri().path(), request.headers());
        let separate = request
            .headers()
            .get(GATEWAY_KEY_HEADER)
            .map(HeaderValue::as_bytes);
        let presented = separate.or_else(|| presented_key(request.headers()));
        let key = match presented.and_then(|key| routes.clients.find(key)) {
            Some(index) => Some(index),
            None if !routes.clients.required() => None,
            None => {
                return self.refuse(
                    dialect,
                    Refusal::Unauthorized,
                    "a valid gateway key is required (Authorization: Bearer <key>, x-api-key, \
                     or x-tollgate-key)",
                    None,
                );
            }
        };
        // The client's own provider key, for passthrough groups: beside a gateway key in
        // x-tollgate-key, or alone when the gateway asks for none.
        let own_key = (separate.is_some() || !routes.clients.required())
            .then(|| presented_key(request.headers()))
            .flatten()
            .map(<[u8]>::to_vec);
        if let Some(problem) = path_problem(request.uri().path()) {
            return self.refuse(dialect, Refusal::BadRequest, problem, None);
        }
        if let Routing::Models(_) = &routes.routing
            && let Some(answer) = models::answer(&routes, &request)
        {
            return answer;
        }
        let tenant = key.and_then(|index| routes.tenants[index].clone());
        if let Some(tenant) = &tenant {
            tenant.requests.fetch_add(1, Ordering::Relaxed);
        }
        let place = match key.map(|index| (index, routes.shares.take(index))) {
            Some((index, None)) => {
                if let Some(tenant) = &tenant {
                    tenant.limited.fetch_add(1, Ordering::Relaxed);
                }
                let share = routes.shares.max(index).unwrap_or_default();
                let response = self.refuse(
                    dialect,
                    Refusal::KeyBusy,
                    &format!(
                        "this gateway key already has {share} requests in flight \
                         (server.max_in_flight_per_key, or its tenant's max_in_flight)"
                    ),
                    Some(Duration::from_secs(1)),
                );
                // A tenant's own cap: its SDK should not spend retries on it.
                return if tenant.is_some() {
                    not_to_retry(response)
                } else {
                    response
                };
            }
            Some((_, Some(place))) => Some(place),
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
        let endpoint = EndpointKind::from_path(parts.uri.path());
        // A body the provider would refuse as it stands costs no upstream call nor any of the
        // rate limit: the gateway answers the provider's 400 itself.
        let model = if parts.method == Method::POST && takes_json(endpoint) {
            match json_object(&body) {
                Ok(model) => model,
                Err(message) => return self.refuse(dialect, Refusal::BadRequest, &message, None),
            }
        } else {
            None
        };
        let route = match &routes.routing {
            Routing::Upstream(route) => route,
            Routing::Models(_) => {
                match self.group_for(&routes, dialect, &parts, model.as_deref()) {
                    Ok(route) => route,
                    Err(response) => return *response,
                }
            }
        };
        let mut charge = None;
        if let Some(tenant) = &tenant {
            let name = route.name().or(model.as_deref()).unwrap_or_default();
            if !tenant.tenant.may_call(name) {
                tenant.forbidden.fetch_add(1, Ordering::Relaxed);
                let message = format!(
                    "the tenant {:?} may not call the model {name:?}; its models are: {}",
                    tenant.tenant.name,
                    tenant
                        .tenant
                        .models
                        .as_deref()
                        .unwrap_or_default()
                        .join(", ")
                );
                return self.refuse(dialect, Refusal::Forbidden, &message, None);
            }
            let (input, output) = if tenant.tenant.tokens_per_minute.is_some() {
                let llm = tollgate_core::annotate::annotate(
                    &parts,
                    &body,
                    None,
                    &tollgate_core::estimate::HeuristicEstimator,
                );
                let output = llm
                    .max_output_tokens
                    .map_or(tollgate::ratelimit::DEFAULT_OUTPUT_TOKENS, u64::from);
                (u64::from(llm.input_tokens_estimate), output)
            } else {
                (0, 0)
            };
            match tenant.admit(input, output).await {
                Ok(taken) => charge = taken,
                Err(wait) => {
                    let message = format!(
                        "the tenant {:?} is over its own limit ({}); retry after {:.1}s",
                        tenant.tenant.name,
                        tenant_limits(&tenant.tenant),
                        wait.as_secs_f64()
                    );
                    // The tenant's own pace: its SDK should not spend retries on it.
                    return not_to_retry(self.refuse(
                        dialect,
                        Refusal::RateLimited,
                        &message,
                        Some(wait),
                    ));
                }
            }
        }
        let own_key = match (&route.target.passthrough, own_key) {
            (None, _) => None,
            (Some(_), Some(own)) => Some(own),
            (Some(_), None) => {
                return self.refuse(
                    dialect,
                    Refusal::Unauthorized,
                    &format!(
                        "the model {:?} is called with your own provider key: send it as \
                         Authorization: Bearer (or x-api-key), and the gateway key as \
                         x-tollgate-key",
                        route.name().unwrap_or_default()
                    ),
                    None,
                );
            }
        };
        let mut upstream = match upstream_request(
            &route.target,
            &self.forward_headers,
            parts,
            body,
            own_key.as_deref(),
        ) {
            Ok(request) => request,
            Err(message) => return self.refuse(dialect, Refusal::BadRequest, &message, None),
        };
        // Each key's cached answers are its own; a passed-through key's are its own too.
        if let Some(own) = &own_key {
            let id = CredentialId::from_secret(own);
            upstream
                .extensions_mut()
                .insert(Tenant::new(format!("key-{}", id.as_str())));
        } else if let Some(index) = key {
            upstream
                .extensions_mut()
                .insert(routes.cache_tenants[index].clone());
        }
        if let Some(tenant) = &tenant {
            upstream
                .extensions_mut()
                .insert(tenant.tenant.priority.extension());
        }
        let group = route.group.is_some();
        if let Some(provider) = route.group.as_ref().and_then(|g| g.provider()) {
            // Read (and priced) as its deployments' provider before the pool picks one.
            upstream.extensions_mut().insert(provider);
        }
        if group {
            let budget = client_timeout(upstream.headers())
                .map_or(self.request_timeout, |t| t.min(self.request_timeout));
            upstream.extensions_mut().insert(Deadline::after(budget));
        }
        let answer = route.llm.clone().oneshot(upstream).await;
        // The request body is no longer needed: its bytes go back to the budget.
        drop(body_bytes);
        match answer {
            Ok(response) => {
                // The tenant's token estimate becomes the usage when the answer ends.
                if let Some(charge) = charge {
                    match response.extensions().get::<EndOfStream>() {
                        Some(end) => end.on_end(move |end| charge.settle(end.usage)),
                        None => charge.settle(None),
                    }
                }
                // A passthrough group's one deployment answers whatever the pool would name.
                let only = route
                    .group
                    .as_ref()
                    .and_then(|g| g.passthrough.as_ref())
                    .map(|d| d.name.as_str());
                self.client_response(dialect, response, place, group.then_some(only))
                    .await
            }
            Err(error) => self.failure(dialect, route, error.as_ref()),
        }
    }

    /// The group a request's `model` names, or the answer saying why there is none.
    fn group_for<'r>(
        &self,
        routes: &'r Routes,
        dialect: Dialect,
        parts: &http::request::Parts,
        model: Option<&str>,
    ) -> Result<&'r Route, Box<Response>> {
        let Some(model) = model else {
            let message = format!(
                "this gateway routes a request by the \"model\" of its JSON body, and {} {} has \
                 none; the models are: {}",
                parts.method,
                parts.uri.path(),
                routes.names()
            );
            return Err(Box::new(self.refuse(
                dialect,
                Refusal::BadRequest,
                &message,
                None,
            )));
        };
        let Some(route) = routes.route(Some(model)) else {
            self.metrics.refusal(Refusal::BadRequest);
            return Err(Box::new(models::unknown(dialect, model, &routes.names())));
        };
        let api = route.group.as_ref().map_or(Api::OpenAi, |g| g.api);
        let wanted = if parts.uri.path().starts_with("/v1/messages") {
            Api::Anthropic
        } else {
            Api::OpenAi
        };
        if api != wanted {
            let how = match api {
                Api::Anthropic => "Anthropic's Messages API (POST /v1/messages)",
                Api::OpenAi => "OpenAI's API (/v1/chat/completions, /v1/responses, /v1/embeddings)",
            };
            let message = format!("the model {model:?} is served through {how}");
            return Err(Box::new(self.refuse(
                dialect,
                Refusal::BadRequest,
                &message,
                None,
            )));
        }
        Ok(route)
    }

    /// The gateway's answer when the stack gave no response.
    fn failure(
        &self,
        dialect: Dialect,
        route: &Route,
        error: &(dyn std::error::Error + 'static),
    ) -> Response {
        let (refusal, wait) = refusal_of(error);
        let mut message = chain(error);
        if let (Some(name), Some(wait)) = (route.name(), models::every_member_out(error)) {
            let message = format!(
                "every deployment of {name:?} is out of rotation for now ({message}); retry \
                 after {}s",
                wait.as_secs_f64().ceil()
            );
            tracing::warn!(group = name, "{message}");
            self.metrics.refusal(Refusal::Overloaded);
            return error_response(
                dialect,
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded_error",
                &format!("tollgate: {message}"),
                Some(wait),
            );
        }
        if refusal == Refusal::Unreachable {
            if is_certificate_error(error) {
                message.push_str(
                    " (the upstream's certificate is not trusted: for a private CA, set \
                     upstream.ca_file)",
                );
            }
            tracing::warn!(error = %message, "no response from the upstream");
        } else {
            tracing::debug!(error = %message, "refused by the stack");
        }
        let response = self.refuse(dialect, refusal, &message, wait);
        if refusal == Refusal::BudgetExceeded {
            // Waiting hours for a budget to reset is not a retry: the SDKs must not try.
            not_to_retry(response)
        } else {
            response
        }
    }

    /// The upstream's response for the client: its status, headers (rate limits,
    /// `retry-after`, request ids; never cookies nor organisation ids) and body, read whole or
    /// relayed at the client's pace within the send timeout (see [`deliver`]); the key's place
    /// in flight is held until the upstream body is done with. A group's answer (`group`:
    /// its one deployment's name when it has no pool) names the deployment that gave it.
    async fn client_response<P: Send + 'static>(
        &self,
        dialect: Dialect,
        response: http::Response<LlmBody>,
        place: P,
        group: Option<Option<&str>>,
    ) -> Response {
        let (mut parts, body) = response.into_parts();
        filter_response(&mut parts.headers);
        if let Some(only) = group {
            let served = parts.extensions.get::<Served>().map(|s| &*s.member);
            if let Some(Ok(value)) = served.or(only).map(HeaderValue::from_str) {
                parts.headers.insert(DEPLOYMENT_HEADER, value);
            }
        }
        let body = match deliver(body, self.send_timeout, place).await {
            Ok(body) => body,
            Err(error) => {
                let message = format!("the upstream's answer broke off: {}", chain(error.as_ref()));
                tracing::warn!(error = %message, "no whole answer from the upstream");
                return self.refuse(dialect, Refusal::Unreachable, &message, None);
            }
        };
        // An answer read whole has been charged by now: its cost, when there are budgets.
        // (A stream's is known only at its end, after these headers: /admin/spend has it.)
        if let Some(charged) = parts
            .extensions
            .get::<tollgate::budget::CallCost>()
            .and_then(tollgate::budget::CallCost::charged)
            && let Ok(value) = HeaderValue::from_str(&charged.spend.usd.to_string())
        {
            parts.headers.insert(COST_HEADER, value);
        }
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

/// `response` marked for the official SDKs not to retry (`x-should-retry: false`).
fn not_to_retry(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    response
}

/// A tenant's limits, for messages: `600 requests a minute, 100000 tokens a minute`.
fn tenant_limits(tenant: &super::config::Tenant) -> String {
    let mut parts = Vec::new();
    if let Some(rpm) = tenant.requests_per_minute {
        parts.push(format!("{rpm} requests a minute"));
    }
    if let Some(tpm) = tenant.tokens_per_minute {
        parts.push(format!("{tpm} tokens a minute"));
    }
    parts.join(", ")
}

/// The request as it goes into a route's stack: the target's scheme, host and path prefix;
/// the client's allowed headers (never its credentials), with the gateway's upstream key, or
/// for a passthrough group the client's own key (`own_key`) and the deployment's model.
fn upstream_request(
    target: &Target,
    forward_headers: &ForwardedHeaders,
    parts: http::request::Parts,
    body: Bytes,
    own_key: Option<&[u8]>,
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
    let path_and_query = format!("{}{path}{query}", target.prefix);
    let path_and_query = PathAndQuery::try_from(path_and_query)
        .map_err(|e| format!("the request path is not valid ({e})"))?;
    let uri = Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| format!("the request path is not valid ({e})"))?;
    let mut headers = forward_headers.filter(&parts.headers);
    if let Some((name, value)) = &target.credential {
        headers.insert(name.clone(), value.clone());
    }
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    if let (Some((auth, rewrite)), Some(key)) = (&target.passthrough, own_key) {
        let (name, value) = match auth {
            Auth::Bearer => (header::AUTHORIZATION, [b"Bearer ".as_slice(), key].concat()),
            Auth::XApiKey => (HeaderName::from_static("x-api-key"), key.to_vec()),
            Auth::ApiKey => (HeaderName::from_static("api-key"), key.to_vec()),
            Auth::GoogApiKey => (HeaderName::from_static("x-goog-api-key"), key.to_vec()),
        };
        let mut value = HeaderValue::from_bytes(&value)
            .map_err(|_| "the key presented is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
        rewrite
            .adapt(&mut request)
            .map_err(|e| format!("cannot point the request at its deployment: {e}"))?;
    }
    Ok(request)
}

/// The client's own timeout, as the OpenAI and Anthropic SDKs announce it
/// (`x-stainless-timeout`, in seconds).
fn client_timeout(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get("x-stainless-timeout")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
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

/// The `model` of a body that must be a JSON object (`None` when it has none, or one that is
/// not a string), or why it is not a JSON object: one pass over the body.
fn json_object(body: &[u8]) -> Result<Option<String>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Model<'a> {
        Name(#[serde(borrow)] std::borrow::Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    #[derive(serde::Deserialize)]
    struct Object<'a> {
        #[serde(borrow)]
        model: Option<Model<'a>>,
    }
    // JSON is UTF-8 (RFC 8259), and skipping a value does not check its strings.
    if let Err(error) = std::str::from_utf8(body) {
        return Err(format!("the request body is not UTF-8 ({error})"));
    }
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(error) => format!("the request body is not valid JSON ({error})"),
                Ok(_) => "the request body must be a JSON object".to_owned(),
            },
        );
    }
    match serde_json::from_slice::<Object<'_>>(body) {
        Err(error) => Err(format!("the request body is not valid JSON ({error})")),
        Ok(Object {
            model: Some(Model::Name(name)),
        }) => Ok(Some(name.into_owned())),
        Ok(_) => Ok(None),
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
            json_object(br#" {"model": "m", "n": [1, {"a": "\u00e9"}]}"#),
            Ok(Some("m".to_owned()))
        );
        assert_eq!(json_object(br#"{"model": 5, "x": {}}"#), Ok(None));
        assert_eq!(json_object(br#"{"messages": []}"#), Ok(None));
        assert_eq!(
            json_object(br#"{"model": "gpt-\u0034o"}"#),
            Ok(Some("gpt-4o".to_owned()))
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
            let message = json_object(body).expect_err("refused");
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
