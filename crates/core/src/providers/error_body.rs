//! The error bodies of every provider, read into one shape.
//!
//! OpenAI (and Azure, Groq, Mistral, Together) send `{"error":{"message","type","code","param"}}`
//! with `code` a string, a number or null; Anthropic wraps the same in
//! `{"type":"error","error":{"type","message"},"request_id"}`; Gemini sends
//! `{"error":{"code":429,"message","status","details":[...]}}`, sometimes inside a one-element
//! array; some servers send a flat `{"message","type","code"}` or `{"error":"text"}`. Fields of
//! an unexpected type are dropped rather than failing the whole body: a half-understood error is
//! still worth classifying.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::Value;

use super::gemini::{self, Detail};
use crate::RateLimitDimension;
use crate::duration::plausible_wait;

/// The interesting parts of a provider error body.
#[derive(Debug, Default)]
pub(crate) struct ErrorBody {
    /// `error.message`.
    message: Option<String>,
    /// `error.type` (OpenAI, Anthropic).
    error_type: Option<String>,
    /// `error.code`: a string (OpenAI) or a number (Gemini's HTTP status), as text.
    code: Option<String>,
    /// `error.status` (Gemini's canonical code, `RESOURCE_EXHAUSTED`).
    status: Option<String>,
    /// `error.details` (Gemini).
    details: Vec<Detail>,
}

impl ErrorBody {
    /// Reads an error body; `None` when it is not JSON or has no recognisable error field.
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
        let envelope = if body[start] == b'[' {
            let [one]: [Envelope; 1] = serde_json::from_slice(body).ok()?;
            one
        } else {
            serde_json::from_slice(body).ok()?
        };
        let parsed = match envelope.error {
            Some(error) => Self {
                message: error.message,
                error_type: error.error_type,
                code: error.code,
                status: error.status,
                details: error.details,
            },
            // Anthropic's envelope `"type":"error"` says nothing about which error.
            None => Self {
                message: envelope.message,
                error_type: envelope.error_type.filter(|t| t != "error"),
                code: envelope.code,
                ..Self::default()
            },
        };
        let known = parsed.message.is_some()
            || parsed.error_type.is_some()
            || parsed.code.is_some()
            || parsed.status.is_some()
            || !parsed.details.is_empty();
        known.then_some(parsed)
    }

    /// The error message.
    pub(crate) fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Gemini's canonical status (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`, ...).
    pub(crate) fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// Whether the error `type` or `code` is `name` (`insufficient_quota`, `overloaded_error`).
    pub(crate) fn is(&self, name: &str) -> bool {
        self.error_type.as_deref() == Some(name) || self.code.as_deref() == Some(name)
    }

    /// Whether the message is exactly "Overloaded" (Anthropic's 500 `api_error`).
    pub(crate) fn says_overloaded(&self) -> bool {
        self.message().is_some_and(|m| {
            m.trim()
                .trim_end_matches('.')
                .eq_ignore_ascii_case("overloaded")
        })
    }

    /// Whether a Gemini `ErrorInfo` says the API key was refused.
    pub(crate) fn rejects_key(&self) -> bool {
        gemini::rejects_key(&self.details)
    }

    /// Whether a Gemini quota violation is per day.
    pub(crate) fn is_daily_quota(&self) -> bool {
        gemini::is_daily(&self.details)
    }

    /// The limit hit: the OpenAI error `type`, then the message, then Gemini's `quotaId`.
    pub(crate) fn dimension(&self) -> Option<RateLimitDimension> {
        self.error_type
            .as_deref()
            .and_then(super::openai::dimension_from_type)
            .or_else(|| self.message().and_then(super::dimension_from_message))
            .or_else(|| gemini::dimension(&self.details))
    }

    /// The window the violated quota counts over, when the body names it (Gemini's
    /// `quotaId`).
    pub(crate) fn rate_limit_window(&self) -> Option<Duration> {
        gemini::window(&self.details)
    }

    /// The wait the body asks for: Gemini's `RetryInfo`, then the message text.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        gemini::retry_delay(&self.details)
            .or_else(|| self.message().and_then(super::retry_after_from_message))
            .and_then(plausible_wait)
    }
}

/// The top level: `error` (an object or a bare message) or the flat fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Envelope {
    #[serde(deserialize_with = "error_object")]
    error: Option<ErrorObject>,
    #[serde(deserialize_with = "text")]
    message: Option<String>,
    #[serde(rename = "type", deserialize_with = "text")]
    error_type: Option<String>,
    #[serde(deserialize_with = "text")]
    code: Option<String>,
}

/// The `error` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorObject {
    #[serde(deserialize_with = "text")]
    message: Option<String>,
    #[serde(rename = "type", deserialize_with = "text")]
    error_type: Option<String>,
    #[serde(deserialize_with = "text")]
    code: Option<String>,
    #[serde(deserialize_with = "text")]
    status: Option<String>,
    #[serde(deserialize_with = "lenient_vec")]
    details: Vec<Detail>,
}

/// A string, or a number as text; anything else is `None`.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The elements of an array that have the expected shape; anything else is empty.
pub(super) fn lenient_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| T::deserialize(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// An `error` object, or a bare `"error": "message"`.
fn error_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ErrorObject>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(message) => Some(ErrorObject {
            message: Some(message),
            ..Default::default()
        }),
        value @ Value::Object(_) => ErrorObject::deserialize(value).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_shape() {
        let openai = ErrorBody::parse(br#"{"error":{"message":"m","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#).unwrap();
        assert!(openai.is("tokens") && openai.is("rate_limit_exceeded"));
        assert_eq!(openai.message(), Some("m"));

        let numeric =
            ErrorBody::parse(br#"{"error":{"message":"m","type":null,"code":1300}}"#).unwrap();
        assert!(numeric.is("1300"));

        let anthropic = ErrorBody::parse(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#).unwrap();
        assert!(
            anthropic.is("overloaded_error")
                && anthropic.says_overloaded()
                && !anthropic.is("error")
        );

        let gemini = ErrorBody::parse(
            br#" [{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED"}}] "#,
        )
        .unwrap();
        assert_eq!(gemini.status(), Some("RESOURCE_EXHAUSTED"));
        assert!(gemini.is("429"));

        let flat =
            ErrorBody::parse(br#"{"type":"error","code":"rate_limit_exceeded","message":"m"}"#)
                .unwrap();
        assert!(flat.is("rate_limit_exceeded") && !flat.is("error"));

        let bare = ErrorBody::parse(br#"{"error":"Model not found"}"#).unwrap();
        assert_eq!(bare.message(), Some("Model not found"));
    }

    #[test]
    fn rejects_what_is_not_an_error() {
        for body in [
            &b""[..],
            b"   ",
            b"Bad Gateway",
            b"<html>",
            b"{}",
            b"[]",
            br#"[{"error":"a"},{"error":"b"}]"#,
            b"null",
            b"42",
            br#"{"error":{"message":"trunc"#,
            br#"{"error":null,"type":"error"}"#,
            br#"{"error":[1]}"#,
        ] {
            assert!(
                ErrorBody::parse(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = [&b"{\"error\":{\"message\":"[..], &[b'['; 100_000]].concat();
        assert!(ErrorBody::parse(&deep).is_none());
        assert!(ErrorBody::parse(&[b'['; 100_000]).is_none());
    }

    #[test]
    fn odd_field_types_are_dropped_not_fatal() {
        let body = ErrorBody::parse(
            br#"{"error":{"message":["x"],"type":{"a":1},"code":"c","details":{"x":1}}}"#,
        )
        .unwrap();
        assert_eq!(body.message(), None);
        assert!(body.is("c"));
    }
}
