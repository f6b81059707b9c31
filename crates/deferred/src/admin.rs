//! The operator surface over HTTP: an axum router with `GET /admin/batch-stats` and
//! `POST /admin/batch-process`, behind a bearer token (feature `admin`).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tollgate_core::Secret;

use super::DeferredQueue;

#[derive(Clone)]
struct Admin {
    queue: DeferredQueue,
    token: Secret,
}

/// The router: `GET /admin/batch-stats` answers the queue's [snapshot](DeferredQueue::snapshot) as
/// JSON; `POST /admin/batch-process` flushes now and answers `202`. Both need
/// `Authorization: Bearer <token>`; anything else is `401`. Merge it into an app's router, or
/// serve it alone.
///
/// ```
/// # async fn serve(queue: tollgate_deferred::DeferredQueue) {
/// use tollgate_core::Secret;
///
/// let admin = tollgate_deferred::admin_router(queue, Secret::new("operator-token"));
/// let app = axum::Router::new().merge(admin);
/// # let _ = app;
/// # }
/// ```
pub fn admin_router(queue: DeferredQueue, token: Secret) -> Router {
    Router::new()
        .route("/admin/batch-stats", get(stats))
        .route("/admin/batch-process", post(process))
        .with_state(Admin { queue, token })
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, as RFC 9110 has it).
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// `None` when the request carries the token; the refusal otherwise.
fn refusal(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    match presented(headers) {
        Some(token) if admin.token.matches(token) => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "a valid bearer token is required"})),
            )
                .into_response(),
        ),
    }
}

async fn stats(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    match admin.queue.snapshot().await {
        Ok(stats) => axum::Json(json!({
            "pending": stats.pending,
            "in_flight": stats.in_flight,
            "done": stats.done,
            "failed": stats.failed,
            "oldest_age_seconds": stats.oldest_age.map(|a| a.as_secs_f64()),
            "batched_jobs": stats.batched_jobs,
            "batches": stats.batches,
            "calls": stats.calls,
            "calls_saved": stats.calls_saved,
            "submit_failures": stats.submit_failures,
            "unwritten": stats.unwritten,
        }))
        .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": error.to_string()})),
        )
            .into_response(),
    }
}

async fn process(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    admin.queue.flush();
    (StatusCode::ACCEPTED, axum::Json(json!({"flushing": true}))).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_a_bearer_scheme_presents_a_token() {
        let token = |value: &'static [u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("a header value"),
            );
            presented(&headers).map(<[u8]>::to_vec)
        };
        assert_eq!(token(b"Bearer op-token"), Some(b"op-token".to_vec()));
        assert_eq!(token(b"bearer  op-token "), Some(b"op-token".to_vec()));
        assert_eq!(token(b"Basic op-token"), None);
        assert_eq!(token(b"op-token"), None);
        assert_eq!(token(b"Bearer \xffop"), Some(b"\xffop".to_vec()));
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
