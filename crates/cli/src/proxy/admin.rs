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
//! - `POST /admin/cache/clear`: drop every cached answer (with `[redis]`, the whole fleet's).
//! - `GET /admin/spend`: every budget (the tenants' and `[stack.budget]`'s): its scope,
//!   window, limits, what it has spent and what calls in flight hold, and when it resets.
//! - `POST /admin/pool/reset`: put every member of every model group back in rotation (their
//!   cooldowns cleared); `{"group": "chat"}` only that group's, `{"member": "chat/openai-1"}`
//!   only that member.
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
use super::forward::Gateway;
use super::refusal::{Dialect, error_response};
use super::routes::Route;

/// What the admin routes share.
#[derive(Debug)]
pub(crate) struct Admin {
    /// The admin token, kept as a digest like a client key.
    token: ClientKeys,
    /// The routes, as they are now (a reload replaces them).
    gateway: Arc<Gateway>,
}

impl Admin {
    pub(crate) fn new(token: &Secret, gateway: Arc<Gateway>) -> Self {
        Self {
            token: ClientKeys::new([token.expose()]),
            gateway,
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
        .route("/admin/pool/reset", post(pool_reset))
        .route("/admin/spend", get(spend))
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

/// `body` as a JSON response with `status`.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response {
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
    let routes = admin.gateway.routes();
    let mut any_degraded = false;
    let mut scopes = Vec::new();
    let mut caches = Vec::new();
    let mut pools = Vec::new();
    for route in routes.all() {
        let handle = &route.handle;
        let mut seen = HashSet::new();
        for s in handle.health() {
            any_degraded |= degraded(s.circuit);
            let mut entry = scope_json(&s.scope);
            entry["circuit"] = circuit_json(handle, &s.scope);
            entry["overload"] = s.overload.as_str().into();
            entry["limit"] = s.limit.into();
            entry["in_flight"] = s.in_flight.into();
            entry["rate_limits"] = super::rate_limits_json(&s.rate_limits);
            if let Some(name) = route.name() {
                entry["group"] = name.into();
            }
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
            if let Some(name) = route.name() {
                entry["group"] = name.into();
            }
            scopes.push(entry);
        }
        if let Some(cache) = &handle.cache {
            caches.push(cache_json(cache));
        }
        if route.group.is_some() {
            pools.push(group_json(route));
        } else if let Some(pool) = &handle.pool {
            pools.push(pool_json(pool, route));
        }
    }
    let mut body = serde_json::json!({
        "status": if any_degraded { "degraded" } else { "ok" },
        "scopes": scopes,
        "tenants": super::tenant::tenants_json(&routes),
    });
    match &routes.routing {
        super::routes::Routing::Upstream(_) => {
            body["cache"] = caches.pop().unwrap_or_default();
            body["pool"] = pools.pop().unwrap_or_default();
        }
        super::routes::Routing::Models(_) => {
            body["models"] = pools.into();
        }
    }
    json(StatusCode::OK, &body)
}

fn cache_json(cache: &tollgate::cache::CacheHandle) -> serde_json::Value {
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
}

/// A model group: its settings, and each member's health, breaker and limits (never a key).
pub(crate) fn group_json(route: &Route) -> serde_json::Value {
    let Some(group) = &route.group else {
        return serde_json::Value::Null;
    };
    let members = match &route.handle.pool {
        Some(pool) => pool_json(pool, route),
        // A passthrough group: a scope per client key, no pool.
        None => serde_json::Value::Array(Vec::new()),
    };
    serde_json::json!({
        "name": group.name,
        "api": group.api.as_str(),
        "auth": match group.auth {
            super::config::GroupAuth::Gateway => "gateway",
            super::config::GroupAuth::Passthrough => "passthrough",
        },
        "fallbacks": group.fallbacks,
        "context_window": group.context_window,
        "members": members,
    })
}

/// The pool's members, each with its health, state and counters, and its scope's breaker,
/// concurrency limit and rate limits (never a key).
fn pool_json(pool: &tollgate::pool::PoolHandle, route: &Route) -> serde_json::Value {
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
        let scope = route
            .members
            .iter()
            .find(|(name, _)| **name == *m.name)
            .map(|(_, scope)| scope);
        let health = scope.and_then(|scope| {
            route.handle.health().into_iter().find(|h| {
                h.scope.provider() == scope.provider()
                    && h.scope.credential() == scope.credential()
                    && (h.scope.model().is_none()
                        || scope.model().is_none()
                        || h.scope.model() == scope.model())
            })
        });
        let circuit = scope.map_or(serde_json::Value::Null, |scope| {
            circuit_json(&route.handle, scope)
        });
        serde_json::json!({
            "credential": scope.and_then(|s| s.credential()).map(CredentialId::as_str),
            "circuit": circuit,
            "limit": health.as_ref().map(|h| h.limit),
            "rate_limits": health
                .as_ref()
                .map_or_else(|| serde_json::json!([]), |h| super::rate_limits_json(&h.rate_limits)),
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
            // With [redis]: every replica's calls to it, added up.
            "fleet": m.fleet.map(|f| serde_json::json!({
                "calls": f.calls,
                "successes": f.successes,
                "rate_limited": f.rate_limited,
                "timeouts": f.timeouts,
                "server_errors": f.server_errors,
                "auth_errors": f.auth_errors,
                "quota_exhausted": f.quota_exhausted,
                "breaker_open": f.breaker_open,
            })),
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
    /// The model group whose breaker it is (default: every route's).
    group: Option<String>,
}

impl Admin {
    /// The scope a `/admin/circuit/*` body names and the group it names, or what is wrong
    /// with the body.
    fn scope(&self, body: &Bytes) -> Result<(Scope, Option<String>), String> {
        let request: ScopeRequest = serde_json::from_slice(body)
            .map_err(|e| format!("the body must be {{\"provider\": ..., \"model\": ...}} ({e})"))?;
        let provider: Provider = request.provider.parse().map_err(|e| format!("{e}"))?;
        let credential = match request.credential {
            Some(id) => Some(CredentialId::named(id)),
            // The single upstream's key, by default.
            None => self.gateway.routes().all().first().and_then(|route| {
                route
                    .group
                    .is_none()
                    .then(|| route.members.first())
                    .flatten()
                    .and_then(|(_, scope)| scope.credential().cloned())
            }),
        };
        Ok((
            Scope::new(provider)
                .with_credential(credential)
                .with_model(request.model.map(Into::into)),
            request.group,
        ))
    }

    fn steer(
        &self,
        body: &Bytes,
        action: &'static str,
        steer: fn(&tollgate::circuit::CircuitHandle, &Scope),
    ) -> Response {
        let (scope, group) = match self.scope(body) {
            Ok(found) => found,
            Err(message) => return bad_request(&message),
        };
        let routes = self.gateway.routes();
        let chosen: Vec<&Route> = routes
            .all()
            .iter()
            .filter(|r| group.as_deref().is_none_or(|g| r.name() == Some(g)))
            .collect();
        if chosen.is_empty() {
            return bad_request(&format!(
                "there is no model group {:?}; the groups are: {}",
                group.unwrap_or_default(),
                routes.names()
            ));
        }
        let breakers: Vec<&tollgate::circuit::CircuitHandle> = chosen
            .iter()
            .filter_map(|r| r.handle.circuit.as_ref())
            .collect();
        let Some(first) = breakers.first() else {
            return error_response(
                Dialect::OpenAi,
                StatusCode::CONFLICT,
                "invalid_request_error",
                "tollgate: the stack has no circuit breaker (stack.circuit_breaker)",
                None,
            );
        };
        for circuit in &breakers {
            steer(circuit, &scope);
        }
        let state = first.state(&scope);
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

/// `POST /admin/cache/clear`: every group's cache, and with `[redis]` the fleet's second level
/// and the other replicas' memory (within a second).
async fn cache_clear(State(admin): State<Arc<Admin>>) -> Response {
    let routes = admin.gateway.routes();
    let caches: Vec<_> = routes
        .all()
        .iter()
        .filter_map(|r| r.handle.cache.as_ref())
        .collect();
    if caches.is_empty() {
        return error_response(
            Dialect::OpenAi,
            StatusCode::CONFLICT,
            "invalid_request_error",
            "tollgate: the cache is not enabled (stack.cache)",
            None,
        );
    }
    let (mut before, mut after, mut shared) = (0, 0, None::<u64>);
    for cache in caches {
        cache.run_pending_tasks();
        before += cache.snapshot().entries;
        match cache.clear_everywhere().await {
            Ok(removed) => {
                if let Some(removed) = removed {
                    *shared.get_or_insert(0) += removed;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "admin: cache cleared here, but not in redis");
                return error_response(
                    Dialect::OpenAi,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    &format!(
                        "tollgate: this replica's cache was cleared, but the fleet's (redis) \
                         could not be: {error}; try again when redis answers"
                    ),
                    None,
                );
            }
        }
        cache.run_pending_tasks();
        after += cache.snapshot().entries;
    }
    tracing::info!(entries = before, shared, "admin: cache cleared");
    let mut body = serde_json::json!({ "cleared": before, "entries": after });
    if let Some(shared) = shared {
        body["shared_cleared"] = shared.into();
    }
    json(StatusCode::OK, &body)
}

/// `GET /admin/spend`.
async fn spend(State(admin): State<Arc<Admin>>) -> Response {
    let routes = admin.gateway.routes();
    let Some(books) = &routes.books else {
        return json(StatusCode::OK, &serde_json::json!({ "budgets": [] }));
    };
    let spend = |s: &tollgate::budget::Spend| {
        serde_json::json!({
            "usd": s.usd.as_dollars_f64(),
            "usd_exact": s.usd.to_string(),
            "tokens": s.tokens,
        })
    };
    let budgets: Vec<serde_json::Value> = books
        .layer
        .snapshot()
        .iter()
        .map(|b| {
            let resets = b
                .resets_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            serde_json::json!({
                "name": b.name,
                "scope": b.scope.to_string(),
                "window": b.window.to_string(),
                "limit_usd": b.limits.usd.map(|u| u.as_dollars_f64()),
                "limit_tokens": b.limits.tokens,
                "spent": spend(&b.spent),
                "reserved": spend(&b.reserved),
                "resets_at": tollgate::budget::window::format_rfc3339(resets, 0),
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "budgets": budgets }))
}

/// The body of `/admin/pool/reset` (empty: every member of every group).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    group: Option<String>,
    member: Option<String>,
}

/// `POST /admin/pool/reset`: members back in rotation, their cooldowns cleared.
async fn pool_reset(State(admin): State<Arc<Admin>>, body: Bytes) -> Response {
    let request: ResetRequest = if body.trim_ascii().is_empty() {
        ResetRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return bad_request(&format!(
                    "the body must be empty, or {{\"group\": ..., \"member\": ...}} ({e})"
                ));
            }
        }
    };
    let routes = admin.gateway.routes();
    let mut reset = Vec::new();
    for route in routes.all() {
        if request
            .group
            .as_deref()
            .is_some_and(|g| route.name() != Some(g))
        {
            continue;
        }
        let Some(pool) = &route.handle.pool else {
            continue;
        };
        for member in pool.snapshot() {
            if request
                .member
                .as_deref()
                .is_some_and(|m| *m != *member.name)
            {
                continue;
            }
            pool.reset(&member.name);
            reset.push(member.name.to_string());
        }
    }
    if reset.is_empty() && (request.group.is_some() || request.member.is_some()) {
        return bad_request(&format!(
            "no pool member matches {}{}; the groups are: {}",
            request
                .group
                .as_deref()
                .map(|g| format!("group {g:?} "))
                .unwrap_or_default(),
            request
                .member
                .as_deref()
                .map(|m| format!("member {m:?}"))
                .unwrap_or_default(),
            routes.names()
        ));
    }
    tracing::info!(members = reset.len(), "admin: pool cooldowns cleared");
    json(StatusCode::OK, &serde_json::json!({ "reset": reset }))
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
