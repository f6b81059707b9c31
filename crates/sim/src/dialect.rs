//! Which provider's conventions a response follows, and the error responses of each.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::limiter::{Dimension, KeyLimiter, Refusal};
use crate::{anthropic, openai};
use tokio::time::Instant;

/// The provider a route imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
}

/// A refusal before the answer, in words both dialects can render.
#[derive(Clone, Debug)]
pub(crate) enum Refuse {
    BadRequest(String),
    Unauthorized {
        missing: bool,
    },
    NotFound(String),
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

impl Dialect {
    /// The dialect of a path: Anthropic's routes start with `/v1/messages`.
    pub(crate) fn of_path(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }

    /// The status and body of a refusal.
    pub(crate) fn render(self, refuse: &Refuse, seq: u64) -> (StatusCode, Bytes) {
        match (self, refuse) {
            (Self::OpenAi, Refuse::BadRequest(message)) => openai::bad_request(message),
            (Self::OpenAi, Refuse::Unauthorized { missing }) => openai::unauthorized(*missing),
            (Self::OpenAi, Refuse::NotFound(route)) => openai::not_found(route),
            (Self::OpenAi, Refuse::BodyTooLarge(limit)) => openai::body_too_large(*limit),
            (Self::OpenAi, Refuse::QuotaExhausted) => openai::quota_exhausted(),
            (Self::OpenAi, Refuse::TooLarge { model, refusal }) => {
                openai::too_large(model, refusal)
            }
            (
                Self::OpenAi,
                Refuse::RateLimited {
                    model,
                    refusal,
                    used,
                },
            ) => openai::rate_limited(model, refusal, *used),
            (Self::OpenAi, Refuse::ServerError) => openai::server_error(),
            (Self::OpenAi, Refuse::Overloaded(status)) => openai::overloaded(*status),
            (Self::Anthropic, Refuse::BadRequest(message)) => anthropic::bad_request(message, seq),
            (Self::Anthropic, Refuse::Unauthorized { .. }) => anthropic::unauthorized(seq),
            (Self::Anthropic, Refuse::NotFound(route)) => anthropic::not_found(route, seq),
            (Self::Anthropic, Refuse::BodyTooLarge(_)) => anthropic::body_too_large(seq),
            (Self::Anthropic, Refuse::QuotaExhausted) => anthropic::quota_exhausted(seq),
            (
                Self::Anthropic,
                Refuse::TooLarge { refusal, .. } | Refuse::RateLimited { refusal, .. },
            ) => anthropic::rate_limited(refusal, seq),
            (Self::Anthropic, Refuse::ServerError) => anthropic::server_error(seq),
            (Self::Anthropic, Refuse::Overloaded(status)) => anthropic::overloaded(*status, seq),
        }
    }

    /// The key's rate-limit headers, in this dialect's names and formats.
    pub(crate) fn limit_headers(
        self,
        headers: &mut HeaderMap,
        limiter: &mut KeyLimiter,
        now: Instant,
        wall: SystemTime,
    ) {
        match self {
            Self::OpenAi => {
                let requests = limiter.view(Dimension::Requests, now);
                let tokens = limiter.view(Dimension::Tokens, now);
                openai::limit_headers(headers, requests, tokens);
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
        }
    }

    /// The wait headers of a 429.
    pub(crate) fn retry_headers(self, headers: &mut HeaderMap, wait: Duration) {
        match self {
            Self::OpenAi => openai::retry_headers(headers, wait),
            Self::Anthropic => anthropic::retry_headers(headers, wait),
        }
    }

    /// The request-id header.
    pub(crate) fn request_id(self, headers: &mut HeaderMap, seq: u64) {
        let (name, id) = match self {
            Self::OpenAi => ("x-request-id", format!("req_sim{seq:016}")),
            Self::Anthropic => ("request-id", anthropic::request_id(seq)),
        };
        if let Ok(id) = HeaderValue::from_str(&id) {
            headers.insert(name, id);
        }
    }
}
