//! Which provider's conventions a response follows, and the error responses of each.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::config::OpenAiFlavor;
use crate::limiter::{Dimension, KeyLimiter, Refusal};
use crate::{anthropic, azure, gemini, mistral, openai};
use tokio::time::Instant;

/// The provider a route imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
    Azure,
    Mistral,
}

/// A refusal before the answer, in words every dialect can render.
#[derive(Clone, Debug)]
pub(crate) enum Refuse {
    BadRequest(String),
    Unauthorized {
        missing: bool,
    },
    NotFound(String),
    /// A model the Models API does not know.
    ModelNotFound(String),
    BodyTooLarge(usize),
    QuotaExhausted,
    TooLarge {
        model: String,
        refusal: Refusal,
    },
    RateLimited {
        model: String,
        refusal: Refusal,
        used: u64,
    },
    ServerError,
    Overloaded(StatusCode),
}

/// What a refusal's body may name besides the refusal itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Context<'a> {
    /// The request number (Anthropic puts a request id in its bodies).
    pub(crate) seq: u64,
    /// Azure's `api-version`, which its 429 message quotes.
    pub(crate) api_version: &'a str,
    /// Azure's operation name (`ChatCompletions_Create`), which its 429 message quotes.
    pub(crate) operation: &'a str,
}

impl Dialect {
    /// The dialect of a path that names no call (for its 404): Anthropic's routes start with
    /// `/v1/messages`, Azure's with `/openai/`, Gemini's with `/v1beta/`; the others are the
    /// OpenAI flavor's.
    pub(crate) fn of_path(path: &str, flavor: OpenAiFlavor) -> Self {
        if path.starts_with("/v1/messages") {
            Self::Anthropic
        } else if path.starts_with("/openai/") {
            Self::Azure
        } else if crate::route::is_gemini(path) {
            Self::Gemini
        } else if flavor == OpenAiFlavor::Mistral {
            Self::Mistral
        } else {
            Self::OpenAi
        }
    }

    /// The status and body of a refusal.
    pub(crate) fn render(self, refuse: &Refuse, context: Context<'_>) -> (StatusCode, Bytes) {
        match self {
            Self::OpenAi => render_openai(refuse),
            Self::Anthropic => render_anthropic(refuse, context.seq),
            Self::Gemini => gemini::render(refuse),
            Self::Azure => azure::render(refuse, context),
            Self::Mistral => mistral::render(refuse),
        }
    }

    /// The key's rate-limit headers, in this dialect's names and formats (Gemini sends none).
    pub(crate) fn limit_headers(
        self,
        headers: &mut HeaderMap,
        limiter: &mut KeyLimiter,
        now: Instant,
        wall: SystemTime,
    ) {
        match self {
            Self::OpenAi | Self::Azure => {
                let requests = limiter.view(Dimension::Requests, now);
                let tokens = limiter.view(Dimension::Tokens, now);
                if self == Self::Azure {
                    azure::limit_headers(headers, requests, tokens);
                } else {
                    openai::limit_headers(headers, requests, tokens);
                }
            }
            Self::Anthropic => {
                let views: Vec<_> = [
                    Dimension::Requests,
                    Dimension::Tokens,
                    Dimension::InputTokens,
                    Dimension::OutputTokens,
                ]
                .into_iter()
                .filter_map(|d| limiter.view(d, now).map(|view| (d, view)))
                .collect();
                anthropic::limit_headers(headers, &views, wall);
            }
            Self::Mistral => mistral::limit_headers(headers, limiter.view(Dimension::Tokens, now)),
            Self::Gemini => {}
        }
    }

    /// The wait headers of a 429 (Gemini puts the wait in the body only).
    pub(crate) fn retry_headers(self, headers: &mut HeaderMap, wait: Duration) {
        match self {
            Self::OpenAi => openai::retry_headers(headers, wait),
            Self::Anthropic | Self::Mistral => anthropic::retry_headers(headers, wait),
            Self::Azure => azure::retry_headers(headers, wait),
            Self::Gemini => {}
        }
    }

    /// The request-id headers.
    pub(crate) fn request_id(self, headers: &mut HeaderMap, seq: u64) {
        let uuid = format!("00000000-0000-4000-8000-{seq:012x}");
        let ids: &[(&str, String)] = match self {
            Self::OpenAi => &[("x-request-id", format!("req_sim{seq:016}"))],
            Self::Anthropic => &[("request-id", anthropic::request_id(seq))],
            Self::Azure => &[("apim-request-id", uuid.clone()), ("x-request-id", uuid)],
            Self::Mistral => &[("mistral-correlation-id", uuid)],
            Self::Gemini => &[],
        };
        for (name, id) in ids {
            if let Ok(id) = HeaderValue::from_str(id) {
                headers.insert(*name, id);
            }
        }
    }

    /// The content type of a JSON body.
    pub(crate) fn json_content_type(self) -> &'static str {
        match self {
            Self::Gemini => "application/json; charset=UTF-8",
            _ => "application/json",
        }
    }
}

fn render_openai(refuse: &Refuse) -> (StatusCode, Bytes) {
    match refuse {
        Refuse::BadRequest(message) => openai::bad_request(message),
        Refuse::Unauthorized { missing } => openai::unauthorized(*missing),
        Refuse::NotFound(route) => openai::not_found(route),
        Refuse::ModelNotFound(model) => openai::model_not_found(model),
        Refuse::BodyTooLarge(limit) => openai::body_too_large(*limit),
        Refuse::QuotaExhausted => openai::quota_exhausted(),
        Refuse::TooLarge { model, refusal } => openai::too_large(model, refusal),
        Refuse::RateLimited {
            model,
            refusal,
            used,
        } => openai::rate_limited(model, refusal, *used),
        Refuse::ServerError => openai::server_error(),
        Refuse::Overloaded(status) => openai::overloaded(*status),
    }
}

fn render_anthropic(refuse: &Refuse, seq: u64) -> (StatusCode, Bytes) {
    match refuse {
        Refuse::BadRequest(message) => anthropic::bad_request(message, seq),
        Refuse::Unauthorized { .. } => anthropic::unauthorized(seq),
        Refuse::NotFound(route) => anthropic::not_found(route, seq),
        Refuse::ModelNotFound(model) => anthropic::model_not_found(model, seq),
        Refuse::BodyTooLarge(_) => anthropic::body_too_large(seq),
        Refuse::QuotaExhausted => anthropic::quota_exhausted(seq),
        Refuse::TooLarge { refusal, .. } | Refuse::RateLimited { refusal, .. } => {
            anthropic::rate_limited(refusal, seq)
        }
        Refuse::ServerError => anthropic::server_error(seq),
        Refuse::Overloaded(status) => anthropic::overloaded(*status, seq),
    }
}
