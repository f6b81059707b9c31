//! One API across providers: a chat call written in one provider's format is sent to a
//! deployment that speaks another, and its answer, or its error, comes back in the caller's.
//!
//! # Why
//!
//! Falling back from one provider to another (OpenAI overloaded, Claude has room) only helps a
//! client if the other provider's answer reaches it in the shape its code and SDK expect. This
//! crate reads each format into one neutral form ([`chat`]) and writes any format from it, so
//! each new format is two mappings, not one per pair.
//!
//! Nothing is silently lost: a field the target format has no place for (OpenAI's `n` or
//! `logprobs` for Anthropic, Anthropic's `top_k` for OpenAI) is noted in a [`Report`]; the
//! caller refuses the request naming them, or sends it without them and says which
//! ([`WhenUntranslatable`]). An upstream error comes back as the caller's own provider would
//! have sent it ([`failure`]): a rate limit stays a 429 the client's SDK raises as its rate
//! limit error, an overload an overload.
//!
//! # Example
//!
//! ```
//! use tollgate_translate::{Format, Options, request, response};
//!
//! // An OpenAI client's call, for an Anthropic deployment.
//! let call = br#"{"model": "claude-sonnet-4-5", "max_tokens": 64,
//!     "messages": [{"role": "system", "content": "Be brief."},
//!                  {"role": "user", "content": "Hello"}]}"#;
//! let (sent, report) = request(Format::OpenAiChat, Format::AnthropicMessages, call, &Options::default())?;
//! let sent: serde_json::Value = serde_json::from_slice(&sent)?;
//! assert_eq!(sent["system"], "Be brief.");
//! assert!(report.is_empty());
//!
//! // Its answer, for the OpenAI client.
//! let answer = br#"{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
//!     "content": [{"type": "text", "text": "Hi!"}], "stop_reason": "end_turn",
//!     "usage": {"input_tokens": 12, "output_tokens": 3}}"#;
//! let (back, _) = response(Format::AnthropicMessages, Format::OpenAiChat, answer, 1_700_000_000)?;
//! let back: serde_json::Value = serde_json::from_slice(&back)?;
//! assert_eq!(back["choices"][0]["message"]["content"], "Hi!");
//! assert_eq!(back["usage"]["total_tokens"], 15);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod anthropic;
mod body;
pub mod chat;
pub mod failure;
pub mod future;
mod layer;
pub mod openai;
mod report;
mod service;
pub mod stream;

pub use self::body::TranslatedBody;
pub use self::failure::{Failure, FailureKind};
pub use self::layer::TranslateLayer;
pub use self::report::{Malformed, Report, Untranslatable, WhenUntranslatable};
pub use self::service::{Translate, UNTRANSLATED_HEADER};
pub use self::stream::{Delta, StreamTranslator};

use serde_json::Value;

/// A wire format of chat calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI's chat completions, `POST /v1/chat/completions` (and every OpenAI-compatible
    /// server's).
    OpenAiChat,
    /// Anthropic's messages, `POST /v1/messages`.
    AnthropicMessages,
}

impl Format {
    /// The path a chat call of this format is sent to.
    pub fn path(self) -> &'static str {
        match self {
            Self::OpenAiChat => "/v1/chat/completions",
            Self::AnthropicMessages => "/v1/messages",
        }
    }
}

/// How requests are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The `max_tokens` of a request for Anthropic that sets none (Anthropic requires one;
    /// OpenAI's default is the model's most). Default 4096.
    pub default_max_tokens: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            default_max_tokens: 4096,
        }
    }
}

fn parse(body: &[u8]) -> Result<Value, Malformed> {
    serde_json::from_slice(body).map_err(|e| Malformed::new(format!("not JSON: {e}")))
}

/// `body`, a request in `from`'s format, written in `to`'s, with what could not go across.
///
/// # Errors
///
/// When `body` cannot be read as a request of `from`'s format.
pub fn request(
    from: Format,
    to: Format,
    body: &[u8],
    options: &Options,
) -> Result<(Vec<u8>, Report), Malformed> {
    let body = parse(body)?;
    let mut report = Report::default();
    let chat = match from {
        Format::OpenAiChat => openai::read_request(&body, &mut report)?,
        Format::AnthropicMessages => anthropic::read_request(&body, &mut report)?,
    };
    let out = match to {
        Format::OpenAiChat => openai::write_request(&chat),
        Format::AnthropicMessages => {
            anthropic::write_request(&chat, options.default_max_tokens, &mut report)
        }
    };
    Ok((out.to_string().into_bytes(), report))
}

/// `body`, an answer in `from`'s format, written in `to`'s (`created`: now, in Unix seconds,
/// for formats that stamp answers), with what could not go across.
///
/// # Errors
///
/// When `body` cannot be read as an answer of `from`'s format.
pub fn response(
    from: Format,
    to: Format,
    body: &[u8],
    created: u64,
) -> Result<(Vec<u8>, Report), Malformed> {
    let body = parse(body)?;
    let mut report = Report::default();
    let answer = match from {
        Format::OpenAiChat => openai::read_response(&body)?,
        Format::AnthropicMessages => anthropic::read_response(&body, &mut report)?,
    };
    let out = match to {
        Format::OpenAiChat => openai::write_response(&answer, created),
        Format::AnthropicMessages => anthropic::write_response(&answer),
    };
    Ok((out.to_string().into_bytes(), report))
}

/// An error answer of `status` in `from`'s format, as `to`'s provider would have sent it: its
/// status and body.
pub fn error(from: Format, to: Format, status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let failure = match from {
        Format::OpenAiChat => openai::read_error(status, body),
        Format::AnthropicMessages => anthropic::read_error(status, body),
    };
    let (status, body) = match to {
        Format::OpenAiChat => openai::write_error(&failure),
        Format::AnthropicMessages => anthropic::write_error(&failure),
    };
    (status, body.to_string().into_bytes())
}
