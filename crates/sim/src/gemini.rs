//! The Gemini dialect (`/v1beta/models/{model}:method`): `generateContent` bodies, the
//! `streamGenerateContent` stream (SSE with `alt=sse`, else a JSON array sent piece by piece),
//! `embedContent` and `batchEmbedContents` vectors, and google.rpc error bodies.
//!
//! Gemini sends no rate-limit headers: a 429 says everything in its body, a `QuotaFailure`
//! naming the quota hit and a `RetryInfo` with the wait, rounded up to whole seconds here so that
//! a client waiting exactly that long is admitted. The quota ids are the free tier's:
//!
//! | limit | `quotaId` |
//! |---|---|
//! | `requests_per_minute` | `GenerateRequestsPerMinutePerProjectPerModel-FreeTier` |
//! | `input_tokens_per_minute` | `GenerateContentInputTokensPerModelPerMinute-FreeTier` |
//! | `requests_per_day` | `GenerateRequestsPerDayPerProjectPerModel-FreeTier` |
//! | `tokens_per_minute`, `output_tokens_per_minute` | the simulator's own `GenerateContentTokensPerModelPerMinute-FreeTier`, `GenerateContentOutputTokensPerModelPerMinute-FreeTier` (Gemini limits input tokens only) |
//!
//! A key with `quota_exhausted` gets the per-day quota's 429 without a `RetryInfo`, and so does
//! a request larger than a per-minute limit (Gemini has no "request too large").

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::answer::{Answer, Break};
use crate::ask::Embeddings;
use crate::body::Ending;
use crate::dialect::Refuse;
use crate::limiter::Dimension;
use crate::openai::{round_millis, whole_seconds};
use crate::text::embedding;

/// The message of a 503, and of the error event that ends a broken stream.
const OVERLOADED: &str = "The model is overloaded. Please try again later.";

fn error(
    code: StatusCode,
    status: &str,
    message: &str,
    details: Option<Value>,
) -> (StatusCode, Bytes) {
    let mut error = json!({"code": code.as_u16(), "message": message, "status": status});
    if let (Some(details), Some(error)) = (details, error.as_object_mut()) {
        error.insert("details".to_owned(), details);
    }
    (code, Bytes::from(json!({ "error": error }).to_string()))
}

/// The status and body of a refusal.
pub(crate) fn render(refuse: &Refuse) -> (StatusCode, Bytes) {
    match refuse {
        Refuse::BadRequest(message) => {
            error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message, None)
        }
        Refuse::Unauthorized { missing: true } => error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            None,
        ),
        Refuse::Unauthorized { missing: false } => {
            let message = "API key not valid. Please pass a valid API key.";
            let details = json!([
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": message},
            ]);
            error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                message,
                Some(details),
            )
        }
        Refuse::NotFound(route) => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Requested entity was not found: {route}"),
            None,
        ),
        Refuse::ModelNotFound(model) => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("models/{model} is not found for API version v1beta."),
            None,
        ),
        Refuse::BodyTooLarge(limit) => error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!("Request payload size exceeds the limit: {limit} bytes."),
            None,
        ),
        Refuse::QuotaExhausted => exhausted(None, Dimension::RequestsPerDay, 0, None),
        Refuse::TooLarge { model, refusal } => {
            exhausted(Some(model), refusal.dimension, refusal.limit, None)
        }
        Refuse::RateLimited { model, refusal, .. } => exhausted(
            Some(model),
            refusal.dimension,
            refusal.limit,
            Some(refusal.wait),
        ),
        Refuse::ServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            None,
        ),
        // Gemini answers an overload with a 503, whatever the scenario's overload_status.
        Refuse::Overloaded(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            OVERLOADED,
            None,
        ),
    }
}

/// The quota metric and id of a dimension.
fn quota(dimension: Dimension) -> (&'static str, &'static str) {
    match dimension {
        Dimension::Requests => (
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        ),
        Dimension::RequestsPerDay => (
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        ),
        Dimension::InputTokens => (
            "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
            "GenerateContentInputTokensPerModelPerMinute-FreeTier",
        ),
        Dimension::Tokens => (
            "generativelanguage.googleapis.com/generate_content_free_tier_token_count",
            "GenerateContentTokensPerModelPerMinute-FreeTier",
        ),
        Dimension::OutputTokens => (
            "generativelanguage.googleapis.com/generate_content_free_tier_output_token_count",
            "GenerateContentOutputTokensPerModelPerMinute-FreeTier",
        ),
    }
}

/// A 429 `RESOURCE_EXHAUSTED` naming the quota hit, with a `RetryInfo` when waiting helps.
fn exhausted(
    model: Option<&str>,
    dimension: Dimension,
    limit: u64,
    wait: Option<Duration>,
) -> (StatusCode, Bytes) {
    let (metric, id) = quota(dimension);
    let mut message = format!(
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: {metric}, limit: {limit}"
    );
    if let Some(model) = model {
        message.push_str(&format!(", model: {model}"));
    }
    let mut details = vec![
        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaMetric": metric, "quotaId": id}]}),
    ];
    if let Some(wait) = wait {
        message.push_str(&format!(
            "\nPlease retry in {}s.",
            round_millis(wait).as_secs_f64()
        ));
        details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}s", whole_seconds(wait))}));
    }
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        &message,
        Some(Value::Array(details)),
    )
}

/// The usage: `cachedContentTokenCount` (part of `promptTokenCount`) only when some were, as
/// Gemini leaves out a zero.
fn usage(answer: &Answer, output_tokens: usize) -> Value {
    let mut usage = json!({
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": answer.prompt_tokens + output_tokens as u64,
    });
    if answer.cached.read > 0 {
        usage["cachedContentTokenCount"] = json!(answer.cached.read);
    }
    usage
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.truncated {
        "MAX_TOKENS"
    } else {
        "STOP"
    }
}

/// One `GenerateContentResponse`: the whole answer, or one piece of a stream.
fn response(answer: &Answer, text: String, finish: bool, output_tokens: usize) -> Value {
    let mut candidate =
        json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if let (true, Some(candidate)) = (finish, candidate.as_object_mut()) {
        candidate.insert("finishReason".to_owned(), json!(finish_reason(answer)));
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage(answer, output_tokens),
        "modelVersion": answer.model,
        "responseId": format!("sim{:016}", answer.seq),
    })
}

/// A `generateContent` response.
pub(crate) fn generate(answer: &Answer) -> Bytes {
    let body = response(answer, answer.text(), true, answer.words.len());
    Bytes::from(body.to_string())
}

/// The `streamGenerateContent` stream: one response per token with the usage so far, the last
/// one with the `finishReason`. With `sse`, each is a `data:` event; else they are the elements
/// of one JSON array. A broken stream ends with an `UNAVAILABLE` error element, or drops.
pub(crate) fn generate_stream(answer: &Answer, sse: bool) -> (Vec<(Duration, Bytes)>, Ending) {
    let frame = |value: &Value, first: bool| {
        Bytes::from(match (sse, first) {
            (true, _) => format!("data: {value}\r\n\r\n"),
            (false, true) => format!("[{value}"),
            (false, false) => format!("\r\n,\r\n{value}"),
        })
    };
    let sent = answer.streamed_tokens();
    let whole = answer.broken.is_none();
    let mut events = Vec::new();
    for i in 0..sent.max(usize::from(whole)) {
        let delay = if i == 0 {
            Duration::ZERO
        } else {
            answer.per_token
        };
        let text = if i < sent {
            answer.piece(i)
        } else {
            String::new()
        };
        let last = whole && i + 1 >= sent;
        let chunk = response(answer, text, last, (i + 1).min(sent));
        events.push((delay, frame(&chunk, i == 0)));
    }
    let close = || Bytes::from_static(b"]");
    match answer.broken {
        Some(Break::Disconnect(_)) => (events, Ending::Disconnect),
        Some(Break::Stall(_)) => (events, Ending::Stall),
        Some(Break::ErrorEvent(_)) => {
            let error =
                json!({"error": {"code": 503, "message": OVERLOADED, "status": "UNAVAILABLE"}});
            events.push((answer.per_token, frame(&error, events.is_empty())));
            if !sse {
                events.push((Duration::ZERO, close()));
            }
            (events, Ending::Finish)
        }
        None => {
            if !sse {
                events.push((Duration::ZERO, close()));
            }
            (events, Ending::Finish)
        }
    }
}

/// An `embedContent` response: `{"embedding":{"values":[...]}}`.
pub(crate) fn embedding_one(inputs: &Embeddings, seed: u64) -> Bytes {
    let values = inputs
        .inputs
        .first()
        .map(|input| embedding(input, inputs.size(0), seed))
        .unwrap_or_default();
    Bytes::from(json!({"embedding": {"values": values}}).to_string())
}

/// A `batchEmbedContents` response: `{"embeddings":[{"values":[...]}, ...]}`.
pub(crate) fn embedding_batch(inputs: &Embeddings, seed: u64) -> Bytes {
    let embeddings: Vec<Value> = inputs
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| json!({"values": embedding(input, inputs.size(i), seed)}))
        .collect();
    Bytes::from(json!({ "embeddings": embeddings }).to_string())
}
