//! `/admin/*`: the operator's routes, behind `server.admin_token`.
//!
//! - `GET /admin/health`: every scope's breaker with its counters, overload state, limit and
//!   calls in flight, the cache's counters, and with a `[stack.pool]` each member's health
//!   score, state (in rotation, cooling down and why, for how long, or parked), calls in
//!   flight and counters.
//! - `POST /admin/circuit/open` and `POST /admin/circuit/reset` with
//!   `{"provider": "openai", "model": "gpt-4o-mini"}`: force a scope's breaker open (every call
//!   refused, a 503, until reset) or close it and forget its counts. `credential` (an id as
//!   `/admin/health` shows it) is optional: the gateway's upstream key's id by default.
//! - `POST /admin/cache/clear`: drop every cached answer.
//!
//! Without a token configured the routes do not exist (404). With one, a request without
//! `Authorization: Bearer <token>`, or with another token, gets a 401 before its body is read.
//! The token is compared as a SHA-256 digest in constant time, like the client keys.
//!
//! `GET /health` stays public (load balancers do not send credentials), and so does
//! `GET /metrics` unless `[metrics] token_env` or `listen` says otherwise; both show only
//! credential ids (digest prefixes), never a key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use tollgate::StackHandle;
use tollgate::circuit::CircuitState;
use tollgate_core::{CredentialId, Provider, Scope, Secret};

use super::config::ClientKeys;
use super::refusal::{Dialect, error_response};

/// What the admin routes share.
#[derive(Debug)]
pub(crate) struct Admin {
    /// The admin token, kept as a digest like a client key.
    token: ClientKeys,
    handle: StackHandle,
    /// The id of the gateway's upstream key: the credential of every scope it calls.
    upstream_credential: Option<CredentialId>,
}

impl Admin {
    pub(crate) fn new(
        token: &Secret,
        handle: StackHandle,
        upstream_credential: Option<CredentialId>,
    ) -> Self {
        Self {
            token: ClientKeys::new([token.expose()]),
            handle,
            upstream_credential,
        }
    }
}

/// The routes, each behind the token check.
pub(crate) fn routes(admin: Admin) -> Router {
    let admin = Arc::new(admin);
    Router::new()
        .route("/admin/health", get(health))
        .route("/admin/circuit/open", post(circuit_open))
        .route("/admin/circuit/reset", post(circuit_reset))
        .route("/admin/cache/clear", post(cache_clear))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(admin)
}

/// The token from `Authorization: Bearer <token>`.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| value[7..].trim_ascii())
}

/// The longest an admin request may take to send its body and be answered.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

async fn require_token(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    if presented_token(request.headers()).is_some_and(|token| admin.token.admits(token)) {
        return tokio::time::timeout(ADMIN_TIMEOUT, next.run(request))
            .await
            .unwrap_or_else(|_| {
                error_response(
                    Dialect::OpenAi,
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout_error",
                    "tollgate: the admin request took longer than 30s",
                    None,
                )
            });
    }
    tracing::warn!(
        path = request.uri().path(),
        "admin request without a valid token"
    );
    let mut response = error_response(
        Dialect::OpenAi,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "tollgate: the admin routes need Authorization: Bearer <server.admin_token>",
        None,
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn bad_request(message: &str) -> Response {
    error_response(
        Dialect::OpenAi,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        &format!("tollgate: {message}"),
        None,
    )
}

fn degraded(state: CircuitState) -> bool {
    matches!(
        state,
        CircuitState::Open | CircuitState::HalfOpen | CircuitState::ForcedOpen
    )
}

fn circuit_json(handle: &StackHandle, scope: &Scope) -> serde_json::Value {
    let Some(circuit) = &handle.circuit else {
        return serde_json::Value::Null;
    };
    match circuit.metrics(scope) {
        Some(m) => serde_json::json!({
            "state": m.state.as_str(),
            "calls": m.window.calls,
            "failures": m.window.failures,
            "slow": m.window.slow,
            "failure_rate": m.window.failure_rate(),
            "consecutive_failures": m.consecutive_failures,
            "trips": m.trips,
            "open_remaining_ms": m.open_remaining.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }),
        None => serde_json::json!({ "state": circuit.state(scope).as_str() }),
    }
}

fn scope_json(scope: &Scope) -> serde_json::Value {
    serde_json::json!({
        "scope": scope.to_string(),
        "provider": scope.provider().as_str(),
        "credential": scope.credential().map(CredentialId::as_str),
        "model": scope.model(),
    })
}

/// `GET /admin/health`.
async fn health(State(admin): State<Arc<Admin>>) -> Response {
    let handle = &admin.handle;
    let mut any_degraded = false;
    let mut seen = HashSet::new();
    let mut scopes = Vec::new();
    for s in handle.health() {
        any_degraded |= degraded(s.circuit);
        let mut entry = scope_json(&s.scope);
        entry["circuit"] = circuit_json(handle, &s.scope);
        entry["overload"] = s.overload.as_str().into();
        entry["limit"] = s.limit.into();
        entry["in_flight"] = s.in_flight.into();
        entry["rate_limits"] = super::rate_limits_json(&s.rate_limits);
        seen.insert(s.scope);
        scopes.push(entry);
    }
    // Breakers without an overload detector yet: a scope forced open before its first call.
    let breakers = handle
        .circuit
        .as_ref()
        .map(|c| c.snapshot())
        .unwrap_or_default();
    for (scope, metrics) in breakers {
        if seen.contains(&scope) {
            continue;
        }
        any_degraded |= degraded(metrics.state);
        let mut entry = scope_json(&scope);
        entry["circuit"] = circuit_json(handle, &scope);
        entry["overload"] = serde_json::Value::Null;
        scopes.push(entry);
    }
    let cache = handle.cache.as_ref().map(|cache| {
        let s = cache.snapshot();
        serde_json::json!({
            "hits": s.hits,
            "stale_hits": s.stale_hits,
            "second_level_hits": s.second_level_hits,
            "misses": s.misses,
            "coalesced": s.coalesced,
            "bypasses": s.bypasses,
            "stored": s.stored,
            "not_stored": s.not_stored,
            "evictions": s.evictions,
            "expirations": s.expirations,
            "entries": s.entries,
            "bytes": s.bytes,
            "in_flight": s.in_flight,
            "in_flight_bytes": s.in_flight_bytes,
        })
    });
    let pool = handle.pool.as_ref().map(pool_json);
    json(
        StatusCode::OK,
        &serde_json::json!({
            "status": if any_degraded { "degraded" } else { "ok" },
            "scopes": scopes,
            "cache": cache,
            "pool": pool,
        }),
    )
}

/// The pool's members, each with its health, state and counters (never a key).
fn pool_json(pool: &tollgate::pool::PoolHandle) -> serde_json::Value {
    use tollgate::pool::{MemberState, Reason};
    let reason = |reason: Reason| match reason {
        Reason::RateLimited => "rate_limited",
        Reason::Timeout => "timeout",
        Reason::ServerError => "server_error",
        Reason::AuthError => "auth_error",
        Reason::QuotaExhausted => "quota_exhausted",
        Reason::BreakerOpen => "breaker_open",
    };
    let members = pool.snapshot().into_iter().map(|m| {
        let (state, why, left) = match m.state {
            MemberState::Available => ("available", None, None),
            MemberState::CoolingDown { reason: r, left } => (
                "cooling_down",
                Some(reason(r)),
                Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
            ),
            MemberState::Parked { reason: r } => ("parked", Some(reason(r)), None),
        };
        let c = m.counters;
        serde_json::json!({
            "name": &*m.name,
            "tier": m.tier,
            "score": m.score,
            "state": state,
            "reason": why,
            "cooldown_left_ms": left,
            "in_flight": m.in_flight,
            "calls": c.calls,
            "successes": c.successes,
            "rate_limited": c.rate_limited,
            "timeouts": c.timeouts,
            "server_errors": c.server_errors,
            "auth_errors": c.auth_errors,
            "quota_exhausted": c.quota_exhausted,
            "breaker_open": c.breaker_open,
            "refused_locally": c.refused_locally,
        })
    });
    serde_json::Value::Array(members.collect())
}

/// The body of `/admin/circuit/*`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRequest {
    provider: String,
    model: Option<String>,
    credential: Option<String>,
}

impl Admin {
    /// The scope a `/admin/circuit/*` body names, or what is wrong with the body.
    fn scope(&self, body: &Bytes) -> Result<Scope, String> {
        let request: ScopeRequest = serde_json::from_slice(body)
            .map_err(|e| format!("the body must be {{\"provider\": ..., \"model\": ...}} ({e})"))?;
        let provider: Provider = request.provider.parse().map_err(|e| format!("{e}"))?;
        let credential = match request.credential {
            Some(id) => Some(CredentialId::named(id)),
            None => self.upstream_credential.clone(),
        };
        Ok(Scope::new(provider)
            .with_credential(credential)
            .with_model(request.model.map(Into::into)))
    }

    fn steer(
        &self,
        body: &Bytes,
        action: &'static str,
        steer: fn(&tollgate::circuit::CircuitHandle, &Scope),
    ) -> Response {
        let Some(circuit) = &self.handle.circuit else {
            return error_response(
                Dialect::OpenAi,
                StatusCode::CONFLICT,
                "invalid_request_error",
                "tollgate: the stack has no circuit breaker (stack.circuit_breaker)",
                None,
            );
        };
        let scope = match self.scope(body) {
            Ok(scope) => scope,
            Err(message) => return bad_request(&message),
        };
        steer(circuit, &scope);
        let state = circuit.state(&scope);
        tracing::info!(%scope, action, state = state.as_str(), "admin: circuit");
        let mut body = scope_json(&scope);
        body["circuit"] = state.as_str().into();
        json(StatusCode::OK, &body)
    }
}

/// `POST /admin/circuit/open`.
async fn circuit_open(State(admin): State<Arc<Admin>>, body: Bytes) -> Response {
    admin.steer(&body, "force_open", |c, s| c.force_open(s))
}

/// `POST /admin/circuit/reset`.
async fn circuit_reset(State(admin): State<Arc<Admin>>, body: Bytes) -> Response {
    admin.steer(&body, "reset", |c, s| c.reset(s))
}

/// `POST /admin/cache/clear`.
async fn cache_clear(State(admin): State<Arc<Admin>>) -> Response {
    let Some(cache) = &admin.handle.cache else {
        return error_response(
            Dialect::OpenAi,
            StatusCode::CONFLICT,
            "invalid_request_error",
            "tollgate: the cache is not enabled (stack.cache)",
            None,
        );
    };
    cache.run_pending_tasks();
    let before = cache.snapshot().entries;
    cache.clear();
    cache.run_pending_tasks();
    tracing::info!(entries = before, "admin: cache cleared");
    json(
        StatusCode::OK,
        &serde_json::json!({ "cleared": before, "entries": cache.snapshot().entries }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_is_presented() {
        let token = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            presented_token(&headers).map(<[u8]>::to_vec)
        };
        assert_eq!(token("Bearer adm-1"), Some(b"adm-1".to_vec()));
        assert_eq!(token("bearer adm-1 "), Some(b"adm-1".to_vec()));
        assert_eq!(token("Basic YWRtOjE="), None);
        assert_eq!(token("Bearer"), None);
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("adm-1"));
        assert_eq!(presented_token(&headers), None);
    }
}
