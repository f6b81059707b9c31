//! The Azure OpenAI dialect: OpenAI's bodies under `/openai/deployments/{deployment}/...`,
//! Azure's own 401, 404 and 429 bodies (`{"error":{"code":"429","message":...}}`), the wait in
//! `retry-after`, `retry-after-ms` and `x-ms-retry-after-ms`, and only the two
//! `x-ratelimit-remaining-*` headers.
//!
//! Azure enforces RPM over short windows (1 s or 10 s); scenarios imitate that with
//! `window = "10s"` on the key.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use crate::dialect::{Context, Refuse};
use crate::limiter::{Dimension, MeterView};
use crate::openai::{self, whole_millis, whole_seconds};

fn error_body(code: StatusCode, message: &str) -> Bytes {
    let body = json!({"error": {"code": code.as_str(), "message": message}});
    Bytes::from(body.to_string())
}

/// The status and body of a refusal: Azure's own for 401, 404 and 429, OpenAI's (which Azure
/// passes through) for the rest.
pub(crate) fn render(refuse: &Refuse, context: Context<'_>) -> (StatusCode, Bytes) {
    match refuse {
        Refuse::Unauthorized { .. } => {
            let status = StatusCode::UNAUTHORIZED;
            let message = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";
            (status, error_body(status, message))
        }
        Refuse::NotFound(_) => {
            let status = StatusCode::NOT_FOUND;
            (status, error_body(status, "Resource not found"))
        }
        Refuse::ModelNotFound(_) => {
            let status = StatusCode::NOT_FOUND;
            let message = "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.";
            let body = json!({"error": {"code": "DeploymentNotFound", "message": message}});
            (status, Bytes::from(body.to_string()))
        }
        Refuse::RateLimited { refusal, .. } => {
            let kind = match refusal.dimension {
                Dimension::Requests | Dimension::RequestsPerDay => "call",
                _ => "token",
            };
            let message = format!(
                "Requests to the {} Operation under Azure OpenAI API version {} have exceeded {kind} rate limit of your current OpenAI S0 pricing tier. Please retry after {} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
                context.operation,
                context.api_version,
                whole_seconds(refusal.wait),
            );
            let status = StatusCode::TOO_MANY_REQUESTS;
            (status, error_body(status, &message))
        }
        Refuse::BadRequest(message) => openai::bad_request(message),
        Refuse::BodyTooLarge(limit) => openai::body_too_large(*limit),
        Refuse::QuotaExhausted => openai::quota_exhausted(),
        Refuse::TooLarge { model, refusal } => openai::too_large(model, refusal),
        Refuse::ServerError => openai::server_error(),
        Refuse::Overloaded(status) => openai::overloaded(*status),
    }
}

/// `x-ratelimit-remaining-requests` and `x-ratelimit-remaining-tokens`: Azure sends no limit
/// and no reset.
pub(crate) fn limit_headers(
    headers: &mut HeaderMap,
    requests: Option<MeterView>,
    tokens: Option<MeterView>,
) {
    let pairs = [
        ("x-ratelimit-remaining-requests", requests),
        ("x-ratelimit-remaining-tokens", tokens),
    ];
    for (name, view) in pairs {
        if let Some(view) = view {
            headers.insert(name, HeaderValue::from(view.remaining));
        }
    }
}

/// `retry-after` (whole seconds, rounded up), `retry-after-ms` and `x-ms-retry-after-ms`
/// (milliseconds, rounded up) on a 429.
pub(crate) fn retry_headers(headers: &mut HeaderMap, wait: Duration) {
    headers.insert("retry-after", HeaderValue::from(whole_seconds(wait)));
    headers.insert("retry-after-ms", HeaderValue::from(whole_millis(wait)));
    headers.insert("x-ms-retry-after-ms", HeaderValue::from(whole_millis(wait)));
}
