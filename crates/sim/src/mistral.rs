//! The Mistral dialect (`openai_flavor = "mistral"`): OpenAI's bodies on `/v1/chat/completions`
//! and `/v1/embeddings`, errors in Mistral's flat `{"object":"error","message","type","param",
//! "code"}` shape, and the per-minute token budget in `x-ratelimitbysize-*-minute` headers.
//!
//! Mistral's 429 (`"type":"rate_limited","code":"1300"`) carries a `retry-after` header here in
//! whole seconds, rounded up: the simulator's choice, so that clients can wait exactly as long
//! as they must; Mistral documents no wait header.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use crate::dialect::Refuse;
use crate::limiter::{Dimension, MeterView};

fn error_body(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    let body =
        json!({"object": "error", "message": message, "type": kind, "param": null, "code": code});
    Bytes::from(body.to_string())
}

/// The status and body of a refusal.
pub(crate) fn render(refuse: &Refuse) -> (StatusCode, Bytes) {
    let (status, message, kind, code) = match refuse {
        Refuse::BadRequest(message) => (
            StatusCode::BAD_REQUEST,
            message.clone(),
            "invalid_request_error",
            None,
        ),
        Refuse::Unauthorized { .. } => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized".to_owned(),
            "invalid_request_error",
            None,
        ),
        Refuse::NotFound(route) => (
            StatusCode::NOT_FOUND,
            format!("Not Found: {route}"),
            "invalid_request_error",
            None,
        ),
        Refuse::ModelNotFound(model) => (
            StatusCode::NOT_FOUND,
            format!("Invalid model: {model}"),
            "invalid_model",
            Some("1500"),
        ),
        Refuse::BodyTooLarge(limit) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body too large: the limit is {limit} bytes."),
            "invalid_request_error",
            None,
        ),
        Refuse::QuotaExhausted => (
            StatusCode::TOO_MANY_REQUESTS,
            "You exceeded your current quota, please check your plan and billing details."
                .to_owned(),
            "insufficient_quota",
            None,
        ),
        Refuse::TooLarge { refusal, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Request too large: {} {} requested, the limit is {} per minute.",
                refusal.requested,
                noun(refusal.dimension),
                refusal.limit
            ),
            "rate_limited",
            Some("1300"),
        ),
        Refuse::RateLimited { refusal, .. } => {
            let what = match refusal.dimension {
                Dimension::Requests | Dimension::RequestsPerDay => "Requests",
                _ => "Tokens",
            };
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!("{what} rate limit exceeded"),
                "rate_limited",
                Some("1300"),
            )
        }
        Refuse::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error".to_owned(),
            "internal_server_error",
            None,
        ),
        Refuse::Overloaded(status) => (
            *status,
            "Overloaded".to_owned(),
            "service_unavailable",
            None,
        ),
    };
    (status, error_body(&message, kind, code))
}

fn noun(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Requests | Dimension::RequestsPerDay => "requests",
        _ => "tokens",
    }
}

/// `x-ratelimitbysize-limit-minute` and `x-ratelimitbysize-remaining-minute`: the key's tokens
/// per minute.
pub(crate) fn limit_headers(headers: &mut HeaderMap, tokens: Option<MeterView>) {
    if let Some(view) = tokens {
        headers.insert(
            "x-ratelimitbysize-limit-minute",
            HeaderValue::from(view.limit),
        );
        headers.insert(
            "x-ratelimitbysize-remaining-minute",
            HeaderValue::from(view.remaining),
        );
    }
}
