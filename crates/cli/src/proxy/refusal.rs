//! The gateway's own answers: when the stack refused to send a request (an open breaker, a
//! local limit, a deadline) or could not reach the upstream, or the client is not allowed.
//! Each is an error body in the caller's dialect (OpenAI's or Anthropic's) with the status an
//! SDK acts on (429 and 503 are retried, honouring `retry-after`; 401, 413 are not).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use tollgate_core::OutcomeKind;
use tollgate_core::error::{
    BodyTooLarge, CircuitOpen, ExceedsLimit, InvalidModel, Overloaded, QueueTimeout, RateLimited,
};

/// Why the gateway answered for itself instead of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A request the gateway cannot forward: an unreadable body, a path that is not valid, a
    /// body that must be a JSON object and is not.
    BadRequest,
    /// No or a wrong client key.
    Unauthorized,
    /// A tenant asked for a model it may not call.
    Forbidden,
    /// The client's key already has its share of requests in flight.
    KeyBusy,
    /// The request body did not arrive within the body-read timeout.
    BodyTimeout,
    /// The request body is over the limit, or the request can never fit a rate limit.
    BodyTooLarge,
    /// A local rate limit refused it for now.
    RateLimited,
    /// A budget cannot hold its worst case until the budget's window resets.
    BudgetExceeded,
    /// The fleet's books (in Redis) do not answer, and budgets fail closed.
    BudgetUnavailable,
    /// The breaker is open.
    CircuitOpen,
    /// Shed by client-side throttling.
    Overloaded,
    /// Waited too long in the concurrency queue.
    QueueTimeout,
    /// The deadline passed.
    Timeout,
    /// The upstream could not be reached, or every attempt failed without a response.
    Unreachable,
}

impl Refusal {
    pub(crate) const ALL: [Self; 14] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::KeyBusy,
        Self::BodyTimeout,
        Self::BodyTooLarge,
        Self::RateLimited,
        Self::BudgetExceeded,
        Self::BudgetUnavailable,
        Self::CircuitOpen,
        Self::Overloaded,
        Self::QueueTimeout,
        Self::Timeout,
        Self::Unreachable,
    ];

    /// The snake_case name, for metrics and `tollgate bench`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::KeyBusy => "key_busy",
            Self::BodyTimeout => "body_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::RateLimited => "rate_limited",
            Self::BudgetExceeded => "budget_exceeded",
            Self::BudgetUnavailable => "budget_unavailable",
            Self::CircuitOpen => "circuit_open",
            Self::Overloaded => "overloaded",
            Self::QueueTimeout => "queue_timeout",
            Self::Timeout => "timeout",
            Self::Unreachable => "upstream_unreachable",
        }
    }

    /// The status the client gets, and the error type in its body.
    const fn status_and_type(self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "permission_error"),
            Self::KeyBusy => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            Self::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "timeout_error"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            // OpenAI's answer to a spending cap: the SDKs raise their rate-limit error.
            Self::BudgetExceeded => (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota"),
            Self::BudgetUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "api_error"),
            Self::CircuitOpen | Self::Overloaded | Self::QueueTimeout => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded_error")
            }
            Self::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
            Self::Unreachable => (StatusCode::BAD_GATEWAY, "api_error"),
        }
    }

    /// The gateway's own answer: the status, `retry-after` when known, and an error body in
    /// the caller's dialect.
    pub(crate) fn response(
        self,
        dialect: Dialect,
        message: &str,
        retry_after: Option<Duration>,
    ) -> Response {
        let (status, kind) = self.status_and_type();
        let mut response = error_response(
            dialect,
            status,
            kind,
            &format!("tollgate: {message}"),
            retry_after,
        );
        if self == Self::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Whose error format the gateway's own answers follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// Anthropic's for its Messages API, and for any request of an Anthropic SDK (which
    /// sends `anthropic-version`: its model list, say); OpenAI's otherwise.
    pub(crate) fn of(path: &str, headers: &http::HeaderMap) -> Self {
        if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }
}

/// An error in the caller's dialect: OpenAI's `{"error":{...}}` or Anthropic's
/// `{"type":"error","error":{...}}`, with `retry-after` (and `retry-after-ms`) when known.
pub(crate) fn error_response(
    dialect: Dialect,
    status: StatusCode,
    kind: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = match dialect {
        Dialect::OpenAi => serde_json::json!({"error": {
            "message": message, "type": kind, "param": null, "code": kind}}),
        Dialect::Anthropic => serde_json::json!({"type": "error", "error": {
            "type": kind, "message": message}}),
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = retry_after {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(millis.div_ceil(1000)),
        );
        headers.insert("retry-after-ms", HeaderValue::from(millis));
    }
    response
}

/// The snake_case name of what a stack error means (`circuit_open`, `upstream_unreachable`).
pub(crate) fn refusal_kind(error: &(dyn std::error::Error + 'static)) -> &'static str {
    refusal_of(error).0.as_str()
}

/// What a stack error means for the client, and how long it should wait.
pub(crate) fn refusal_of(error: &(dyn std::error::Error + 'static)) -> (Refusal, Option<Duration>) {
    for e in std::iter::successors(Some(error), |e| e.source()).take(32) {
        if e.is::<BodyTooLarge>() || e.is::<ExceedsLimit>() {
            return (Refusal::BodyTooLarge, None);
        }
        if e.is::<InvalidModel>() {
            return (Refusal::BadRequest, None);
        }
        if let Some(e) = e.downcast_ref::<tollgate::budget::BudgetExceeded>() {
            let wait = e
                .resets_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            return (Refusal::BudgetExceeded, Some(wait));
        }
        if let Some(e) = e.downcast_ref::<tollgate::budget::BudgetUnavailable>() {
            return (Refusal::BudgetUnavailable, Some(e.retry_after));
        }
        if let Some(e) = e.downcast_ref::<RateLimited>() {
            return (Refusal::RateLimited, e.retry_after);
        }
        if let Some(e) = e.downcast_ref::<CircuitOpen>() {
            return (Refusal::CircuitOpen, e.retry_after);
        }
        if let Some(e) = e.downcast_ref::<Overloaded>() {
            return (Refusal::Overloaded, e.retry_after);
        }
        if e.is::<QueueTimeout>() {
            return (Refusal::QueueTimeout, None);
        }
    }
    let outcome = tollgate_core::classify::classify_error(error);
    match outcome.kind {
        OutcomeKind::Timeout => (Refusal::Timeout, outcome.retry_after),
        // `ConnectError` (never sent), `ConnectionLost` (sent, the connection broke before an
        // answer) and any other failure without a response: a 502.
        _ => (Refusal::Unreachable, outcome.retry_after),
    }
}

/// An error and its sources, `: `-separated.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    for source in std::iter::successors(error.source(), |e| e.source()).take(8) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

/// Any path outside `/v1/`, `/health` and `/metrics`.
pub(crate) async fn not_found(request: Request) -> Response {
    let dialect = Dialect::of(request.uri().path(), request.headers());
    error_response(
        dialect,
        StatusCode::NOT_FOUND,
        "not_found_error",
        &format!(
            "tollgate: no route for {}; the gateway forwards /v1/...",
            request.uri().path()
        ),
        None,
    )
}

#[cfg(test)]
mod tests {
    use tollgate_core::BoxError;

    use super::*;

    #[test]
    fn stack_errors_become_refusals_with_their_wait() {
        let wait = Some(Duration::from_secs(3));
        let cases: [(BoxError, Refusal); 6] = [
            (Box::new(InvalidModel::Empty), Refusal::BadRequest),
            (Box::new(CircuitOpen::new(wait)), Refusal::CircuitOpen),
            (Box::new(BodyTooLarge { limit: 1 }), Refusal::BodyTooLarge),
            (
                Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                Refusal::Unreachable,
            ),
            (
                Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                Refusal::Unreachable,
            ),
            (
                Box::new(QueueTimeout {
                    waited: Duration::ZERO,
                }),
                Refusal::QueueTimeout,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(refusal_of(error.as_ref()).0, want, "{error}");
        }
        assert_eq!(
            refusal_of(&CircuitOpen::new(wait)).1,
            wait,
            "the wait is kept"
        );
    }
}
