//! The Anthropic dialect: Messages API bodies, the SSE event sequence, error bodies and
//! `anthropic-ratelimit-*` headers with RFC 3339 resets.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::answer::{Answer, Break};
use crate::body::Ending;
use crate::limiter::{Dimension, MeterView, Refusal};
use crate::openai::whole_seconds;

fn error_body(kind: &str, message: &str, seq: u64) -> Bytes {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id(seq)});
    Bytes::from(body.to_string())
}

/// The `request-id` of request `seq`.
pub(crate) fn request_id(seq: u64) -> String {
    format!("req_sim{seq:016}")
}

/// 400 `invalid_request_error`.
pub(crate) fn bad_request(message: &str, seq: u64) -> (StatusCode, Bytes) {
    (
        StatusCode::BAD_REQUEST,
        error_body("invalid_request_error", message, seq),
    )
}

/// 401 `authentication_error`.
pub(crate) fn unauthorized(seq: u64) -> (StatusCode, Bytes) {
    (
        StatusCode::UNAUTHORIZED,
        error_body("authentication_error", "invalid x-api-key", seq),
    )
}

/// 404 `not_found_error`.
pub(crate) fn not_found(route: &str, seq: u64) -> (StatusCode, Bytes) {
    (
        StatusCode::NOT_FOUND,
        error_body("not_found_error", &format!("Not found: {route}"), seq),
    )
}

/// 404 `not_found_error` for an unknown model.
pub(crate) fn model_not_found(model: &str, seq: u64) -> (StatusCode, Bytes) {
    (
        StatusCode::NOT_FOUND,
        error_body("not_found_error", &format!("model: {model}"), seq),
    )
}

/// 413 `request_too_large`.
pub(crate) fn body_too_large(seq: u64) -> (StatusCode, Bytes) {
    let message = "Request exceeds the maximum allowed number of bytes.";
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        error_body("request_too_large", message, seq),
    )
}

/// Anthropic's exhausted credit: a 400, not a 429.
pub(crate) fn quota_exhausted(seq: u64) -> (StatusCode, Bytes) {
    let message = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.";
    (
        StatusCode::BAD_REQUEST,
        error_body("invalid_request_error", message, seq),
    )
}

fn per_minute(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::RequestsPerDay => "requests per day",
        Dimension::Requests => "requests per minute",
        Dimension::Tokens => "tokens per minute",
        Dimension::InputTokens => "input tokens per minute",
        Dimension::OutputTokens => "output tokens per minute",
    }
}

/// 429 `rate_limit_error`, naming the limit as Anthropic does.
pub(crate) fn rate_limited(refusal: &Refusal, seq: u64) -> (StatusCode, Bytes) {
    let message = format!(
        "This request would exceed the rate limit for your organization of {} {}. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
        thousands(refusal.limit),
        per_minute(refusal.dimension)
    );
    (
        StatusCode::TOO_MANY_REQUESTS,
        error_body("rate_limit_error", &message, seq),
    )
}

/// `40000` → `40,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 500 `api_error`.
pub(crate) fn server_error(seq: u64) -> (StatusCode, Bytes) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body("api_error", "Internal server error", seq),
    )
}

/// An overload in the configured style: 529 `overloaded_error`, or a 500 `api_error`
/// "Overloaded", or a 503.
pub(crate) fn overloaded(status: StatusCode, seq: u64) -> (StatusCode, Bytes) {
    let kind = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "api_error"
    } else {
        "overloaded_error"
    };
    (status, error_body(kind, "Overloaded", seq))
}

fn rfc3339(at: SystemTime) -> String {
    // Whole seconds, as Anthropic sends them; rounded up so the quota really is back then.
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// `anthropic-ratelimit-*-{limit,remaining,reset}`: token `remaining` rounded down to the
/// thousand, resets as RFC 3339 times on the simulator's clock (`now`).
pub(crate) fn limit_headers(
    headers: &mut HeaderMap,
    views: &[(Dimension, MeterView)],
    now: SystemTime,
) {
    for (dimension, view) in views {
        let (prefix, rounded) = match dimension {
            Dimension::Requests => ("requests", false),
            Dimension::Tokens => ("tokens", true),
            Dimension::InputTokens => ("input-tokens", true),
            Dimension::OutputTokens => ("output-tokens", true),
            // Anthropic has no per-day limit, so no header for one.
            Dimension::RequestsPerDay => continue,
        };
        let remaining = if rounded {
            view.remaining / 1_000 * 1_000
        } else {
            view.remaining
        };
        let values = [
            ("limit", view.limit.to_string()),
            ("remaining", remaining.to_string()),
            ("reset", rfc3339(now + view.reset)),
        ];
        for (field, value) in values {
            let name = format!("anthropic-ratelimit-{prefix}-{field}");
            if let (Ok(name), Ok(value)) =
                (name.parse::<HeaderName>(), HeaderValue::from_str(&value))
            {
                headers.insert(name, value);
            }
        }
    }
}

/// `retry-after` in whole seconds, rounded up (Mistral's 429 carries the same).
pub(crate) fn retry_headers(headers: &mut HeaderMap, wait: Duration) {
    headers.insert("retry-after", HeaderValue::from(whole_seconds(wait)));
}

fn stop_reason(answer: &Answer) -> &'static str {
    if answer.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// The usage: `input_tokens` leaves out the tokens read from the cache, as Anthropic's does.
fn usage(answer: &Answer, output_tokens: usize) -> Value {
    json!({
        "input_tokens": answer.prompt_tokens - answer.cached.read,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": answer.cached.read,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

fn message_id(answer: &Answer) -> String {
    format!("msg_sim{:016}", answer.seq)
}

/// A `message` object.
pub(crate) fn message(answer: &Answer) -> Bytes {
    let body = json!({
        "id": message_id(answer),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [{"type": "text", "text": answer.text()}],
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": usage(answer, answer.words.len()),
    });
    Bytes::from(body.to_string())
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The Messages stream: `message_start` (with the input usage), `content_block_start`, `ping`,
/// one `content_block_delta` per token, `content_block_stop`, `message_delta` (with the output
/// usage), `message_stop`; or an `event: error` after a 200, or a dropped connection.
pub(crate) fn message_stream(answer: &Answer) -> (Vec<(Duration, Bytes)>, Ending) {
    let start = json!({"type": "message_start", "message": {
        "id": message_id(answer), "type": "message", "role": "assistant", "model": answer.model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(answer, 1),
    }});
    let mut events = vec![
        (Duration::ZERO, event("message_start", &start)),
        (
            Duration::ZERO,
            event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
        ),
        (Duration::ZERO, event("ping", &json!({"type": "ping"}))),
    ];
    let sent = answer.streamed_tokens();
    for i in 0..sent {
        let delay = if i == 0 {
            Duration::ZERO
        } else {
            answer.per_token
        };
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": answer.piece(i)}});
        events.push((delay, event("content_block_delta", &delta)));
    }
    match answer.broken {
        Some(Break::Disconnect(_)) => return (events, Ending::Disconnect),
        Some(Break::Stall(_)) => return (events, Ending::Stall),
        Some(Break::ErrorEvent(_)) => {
            let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
            events.push((answer.per_token, event("error", &error)));
            return (events, Ending::Finish);
        }
        None => {}
    }
    events.push((
        answer.per_token,
        event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ),
    ));
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
        "usage": {"output_tokens": sent}});
    events.push((Duration::ZERO, event("message_delta", &delta)));
    events.push((
        Duration::ZERO,
        event("message_stop", &json!({"type": "message_stop"})),
    ));
    (events, Ending::Finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(40_000), "40,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn resets_are_whole_rfc3339_seconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_755_780_059_200);
        assert_eq!(rfc3339(at), "2025-08-21T12:41:00Z");
    }
}
