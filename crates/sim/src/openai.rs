//! The OpenAI dialect: response bodies, SSE chunks, error bodies and `x-ratelimit-*` headers
//! exactly as OpenAI's API reference documents them (see `docs/outcomes.md`). Azure and Mistral answer with the
//! same bodies; only their errors and headers differ.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tollgate_core::duration::format_go_duration;

use crate::answer::{Answer, Break};
use crate::ask::Embeddings;
use crate::body::Ending;
use crate::limiter::{Dimension, MeterView, Refusal};
use crate::text::embedding;

fn error_body(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    Bytes::from(body.to_string())
}

/// 400 `invalid_request_error`.
pub(crate) fn bad_request(message: &str) -> (StatusCode, Bytes) {
    (
        StatusCode::BAD_REQUEST,
        error_body(message, "invalid_request_error", None),
    )
}

/// 401 `invalid_api_key` (the key itself is never echoed).
pub(crate) fn unauthorized(missing: bool) -> (StatusCode, Bytes) {
    let message = if missing {
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    } else {
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
    };
    (
        StatusCode::UNAUTHORIZED,
        error_body(message, "invalid_request_error", Some("invalid_api_key")),
    )
}

/// 404 `unknown_url`.
pub(crate) fn not_found(route: &str) -> (StatusCode, Bytes) {
    let message = format!("Unknown request URL: {route}. Please check the URL for typos.");
    (
        StatusCode::NOT_FOUND,
        error_body(&message, "invalid_request_error", Some("unknown_url")),
    )
}

/// 404 `model_not_found`.
pub(crate) fn model_not_found(model: &str) -> (StatusCode, Bytes) {
    let message = format!("The model '{model}' does not exist");
    let body = json!({"error": {"message": message, "type": "invalid_request_error",
        "param": "model", "code": "model_not_found"}});
    (StatusCode::NOT_FOUND, Bytes::from(body.to_string()))
}

/// 413 for a body over the size cap.
pub(crate) fn body_too_large(limit: usize) -> (StatusCode, Bytes) {
    let message = format!("Request body too large: the limit is {limit} bytes.");
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        error_body(&message, "invalid_request_error", None),
    )
}

/// 429 `insufficient_quota`: never worth retrying.
pub(crate) fn quota_exhausted() -> (StatusCode, Bytes) {
    let message = "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.";
    (
        StatusCode::TOO_MANY_REQUESTS,
        error_body(message, "insufficient_quota", Some("insufficient_quota")),
    )
}

fn per_minute(dimension: Dimension) -> (&'static str, &'static str) {
    match dimension {
        Dimension::RequestsPerDay => ("requests", "requests per day (RPD)"),
        Dimension::Requests => ("requests", "requests per min (RPM)"),
        Dimension::Tokens => ("tokens", "tokens per min (TPM)"),
        Dimension::InputTokens => ("input_tokens", "input tokens per min (ITPM)"),
        Dimension::OutputTokens => ("output_tokens", "output tokens per min (OTPM)"),
    }
}

/// 429 "Request too large": a request bigger than the per-minute limit itself.
pub(crate) fn too_large(model: &str, refusal: &Refusal) -> (StatusCode, Bytes) {
    let (kind, per) = per_minute(refusal.dimension);
    let message = format!(
        "Request too large for {model} in organization org-sim on {per}: Limit {}, Requested {}. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.",
        refusal.limit, refusal.requested
    );
    (
        StatusCode::TOO_MANY_REQUESTS,
        error_body(&message, kind, Some("rate_limit_exceeded")),
    )
}

/// 429 "Rate limit reached", with the wait in the message as OpenAI writes it.
pub(crate) fn rate_limited(model: &str, refusal: &Refusal, used: u64) -> (StatusCode, Bytes) {
    let (kind, per) = per_minute(refusal.dimension);
    let message = format!(
        "Rate limit reached for {model} in organization org-sim on {per}: Limit {}, Used {used}, Requested {}. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.",
        refusal.limit,
        refusal.requested,
        format_go_duration(round_millis(refusal.wait)),
    );
    (
        StatusCode::TOO_MANY_REQUESTS,
        error_body(&message, kind, Some("rate_limit_exceeded")),
    )
}

/// 500 `server_error`.
pub(crate) fn server_error() -> (StatusCode, Bytes) {
    let message = "The server had an error while processing your request. Sorry about that!";
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body(message, "server_error", None),
    )
}

/// An overload in the configured style (529, 500 "Overloaded" or 503).
pub(crate) fn overloaded(status: StatusCode) -> (StatusCode, Bytes) {
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "Overloaded"
    } else {
        "The engine is currently overloaded, please try again later"
    };
    (status, error_body(message, "server_error", None))
}

/// `wait` rounded up to the millisecond, so a client that waits exactly this long fits.
pub(crate) fn round_millis(wait: Duration) -> Duration {
    let millis = wait.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`: counts as integers, resets as Go
/// durations.
pub(crate) fn limit_headers(
    headers: &mut HeaderMap,
    requests: Option<MeterView>,
    tokens: Option<MeterView>,
) {
    for (suffix, view) in [("requests", requests), ("tokens", tokens)] {
        let Some(view) = view else { continue };
        let values = [
            ("limit", view.limit.to_string()),
            ("remaining", view.remaining.to_string()),
            ("reset", format_go_duration(round_millis(view.reset))),
        ];
        for (field, value) in values {
            let name = format!("x-ratelimit-{field}-{suffix}");
            if let (Ok(name), Ok(value)) = (
                name.parse::<http::HeaderName>(),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
    }
}

/// `wait` in whole seconds, rounded up.
pub(crate) fn whole_seconds(wait: Duration) -> u64 {
    u64::try_from(round_millis(wait).as_millis().div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// `wait` in whole milliseconds, rounded up.
pub(crate) fn whole_millis(wait: Duration) -> u64 {
    u64::try_from(round_millis(wait).as_millis()).unwrap_or(u64::MAX)
}

/// `retry-after` (whole seconds, rounded up) and `retry-after-ms` on a 429.
pub(crate) fn retry_headers(headers: &mut HeaderMap, wait: Duration) {
    headers.insert("retry-after", HeaderValue::from(whole_seconds(wait)));
    headers.insert("retry-after-ms", HeaderValue::from(whole_millis(wait)));
}

fn usage(answer: &Answer, output_tokens: usize) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": answer.prompt_tokens + output_tokens as u64,
        "prompt_tokens_details": {"cached_tokens": answer.cached.read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.truncated { "length" } else { "stop" }
}

/// A `chat.completion` object.
pub(crate) fn completion(answer: &Answer) -> Bytes {
    let body = json!({
        "id": format!("chatcmpl-sim{:08}", answer.seq),
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text(), "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": finish_reason(answer),
        }],
        "usage": usage(answer, answer.words.len()),
        "service_tier": "default",
        "system_fingerprint": "fp_tollgate_sim",
    });
    Bytes::from(body.to_string())
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The `chat.completion.chunk` stream: a role chunk, one chunk per token, a finish chunk, the
/// usage chunk when asked for (every chunk then carries `"usage": null`), and `[DONE]`.
pub(crate) fn completion_stream(
    answer: &Answer,
    include_usage: bool,
) -> (Vec<(Duration, Bytes)>, Ending) {
    let id = format!("chatcmpl-sim{:08}", answer.seq);
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": answer.created,
            "model": answer.model, "system_fingerprint": "fp_tollgate_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        sse(&chunk)
    };
    let mut events = vec![(
        Duration::ZERO,
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        ),
    )];
    let sent = answer.streamed_tokens();
    for i in 0..sent {
        let delay = if i == 0 {
            Duration::ZERO
        } else {
            answer.per_token
        };
        events.push((delay, chunk(json!({"content": answer.piece(i)}), None)));
    }
    match answer.broken {
        Some(Break::Disconnect(_)) => return (events, Ending::Disconnect),
        Some(Break::Stall(_)) => return (events, Ending::Stall),
        Some(Break::ErrorEvent(_)) => {
            let error = json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}});
            events.push((answer.per_token, sse(&error)));
            return (events, Ending::Finish);
        }
        None => {}
    }
    events.push((
        answer.per_token,
        chunk(json!({}), Some(finish_reason(answer))),
    ));
    if include_usage {
        let last = json!({
            "id": id, "object": "chat.completion.chunk", "created": answer.created,
            "model": answer.model, "system_fingerprint": "fp_tollgate_sim",
            "choices": [], "usage": usage(answer, sent),
        });
        events.push((Duration::ZERO, sse(&last)));
    }
    events.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    (events, Ending::Finish)
}

/// An embeddings `list`, vectors as floats or base64 of little-endian f32.
pub(crate) fn embeddings(model: &str, inputs: &Embeddings, prompt_tokens: u64, seed: u64) -> Bytes {
    let data: Vec<Value> = inputs
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding(input, inputs.dimensions, seed);
            let encoded = if inputs.base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": encoded})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    Bytes::from(body.to_string())
}
