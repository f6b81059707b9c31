//! The rules that turn a response, a stream error event or a transport error into an
//! [`Outcome`].
//!
//! Status codes alone mislead: OpenAI answers 429 both for "wait a second" and for "your
//! account is out of money", Anthropic can say "overloaded" with a 500, a 200 stream can end in
//! an error event. These rules read the status, the headers and a peek at the error body, in
//! that order of trust, and name what happened in [`OutcomeKind`]'s words.

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use crate::providers::{self, ErrorBody, contains_any};
use crate::{Outcome, OutcomeKind, RateLimitDimension};

/// Messages that mean the prompt does not fit the model's context window.
const CONTEXT_LENGTH_MESSAGES: [&str; 5] = [
    "maximum context length",
    "prompt is too long",
    "context window",
    "exceeds the maximum number of tokens",
    "input token count",
];

/// How deep [`classify_error`] follows `source()` (a cycle must not hang it).
const MAX_SOURCE_DEPTH: usize = 32;

/// Classifies a response from its status, headers and a peek at its body.
///
/// `body` is at most the first 64 KiB of the body, possibly truncated or empty; it is read only
/// for a non-2xx status. The outcome always carries the `status`, the `x-should-retry` header as
/// `should_retry`, and `retry_after` from the headers ([`providers::retry_after`]) or, when no
/// header says it, from Gemini's `RetryInfo` or the message text ("Please try again in 1.146s",
/// "Please retry after 37 seconds"), except for an exhausted quota (`insufficient_quota`), which
/// no wait cures.
///
/// The rules, first match wins:
///
/// 1. 2xx is [`Success`](OutcomeKind::Success).
/// 2. An error type `request_too_large` (Anthropic) is
///    [`RequestTooLarge`](OutcomeKind::RequestTooLarge); `overloaded_error` is
///    [`Overloaded`](OutcomeKind::Overloaded), whatever the status.
/// 3. 429: type or code `insufficient_quota` is [`QuotaExhausted`](OutcomeKind::QuotaExhausted);
///    a message starting "Request too large" is `RequestTooLarge`; a Gemini quota violation whose
///    `quotaId` contains `PerDay` is `QuotaExhausted`; anything else is
///    [`RateLimited`](OutcomeKind::RateLimited), on the dimension named by the OpenAI error type,
///    else the message, else Gemini's `quotaId`, else the first `anthropic-ratelimit-*-remaining`
///    header that is 0, else [`Unknown`](RateLimitDimension::Unknown).
/// 4. 413 is `RequestTooLarge`; 401 and 403 are [`AuthError`](OutcomeKind::AuthError); 408 and
///    504 are [`Timeout`](OutcomeKind::Timeout); 503 and 529 are `Overloaded`.
/// 5. Another 4xx whose type is `authentication_error` or `permission_error`, or whose Gemini
///    `ErrorInfo` reason is `API_KEY_INVALID` (Gemini answers a bad key with a 400), is `AuthError`;
///    a 400 or 422 whose code is `context_length_exceeded` or whose message says so ("maximum
///    context length", "prompt is too long", "context window", Gemini's "input token count ...
///    exceeds the maximum number of tokens") is
///    [`ContextLengthExceeded`](OutcomeKind::ContextLengthExceeded); any other 4xx is
///    [`ClientError`](OutcomeKind::ClientError).
/// 6. A 5xx whose message is "Overloaded" (Anthropic's `api_error`) or whose Gemini status is
///    `UNAVAILABLE` is `Overloaded`; another 5xx is [`ServerError`](OutcomeKind::ServerError),
///    and so is a status of 600 and above (the server is broken).
/// 7. 1xx and 3xx are `ClientError`: the client reached something that is not the API.
pub fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Outcome {
    let mut outcome = Outcome::new(OutcomeKind::Success)
        .with_status(status)
        .with_should_retry(providers::should_retry(headers))
        .with_retry_after(providers::retry_after(headers, now));
    if status.is_success() {
        return outcome;
    }
    let error = ErrorBody::parse(body);
    outcome.kind = response_kind(status, headers, error.as_ref());
    if outcome.retry_after.is_none() {
        outcome.retry_after = error.as_ref().and_then(body_wait);
    }
    if matches!(outcome.kind, OutcomeKind::RateLimited(_)) {
        outcome.rate_limit_window = error.as_ref().and_then(ErrorBody::rate_limit_window);
    }
    outcome
}

/// Classifies the `data` of an SSE `event: error` that arrived after a 200.
///
/// Anthropic sends `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
/// OpenAI `{"error":{"message":...,"type":"server_error"}}`. The rules, first match wins:
/// `overloaded_error`, a message "Overloaded" or Gemini `UNAVAILABLE` is
/// [`Overloaded`](OutcomeKind::Overloaded); `insufficient_quota` or a Gemini per-day quota is
/// [`QuotaExhausted`](OutcomeKind::QuotaExhausted); `rate_limit_error`, `rate_limit_exceeded` or
/// Gemini `RESOURCE_EXHAUSTED` is [`RateLimited`](OutcomeKind::RateLimited) on the dimension the
/// body names (else [`Unknown`](RateLimitDimension::Unknown)); `timeout_error` or Gemini
/// `DEADLINE_EXCEEDED` is [`Timeout`](OutcomeKind::Timeout); anything else (`api_error`,
/// `server_error`, unparseable data) is [`ServerError`](OutcomeKind::ServerError): the stream
/// broke on the server's side. `status` is `None`; `retry_after` comes from the body as in
/// [`classify_response`].
pub fn classify_stream_error(data: &[u8]) -> Outcome {
    let Some(error) = ErrorBody::parse(data) else {
        return Outcome::new(OutcomeKind::ServerError);
    };
    Outcome::new(stream_kind(&error)).with_retry_after(body_wait(&error))
}

/// Classifies an error raised instead of a response, walking `error` and its
/// [`source()`](std::error::Error::source) chain.
///
/// What matters about a transport error is whether the request left: one that never did
/// ([`ConnectError`](OutcomeKind::ConnectError)) can always be sent again, one that may have
/// reached the provider ([`ConnectionLost`](OutcomeKind::ConnectionLost)) may already have been
/// processed and billed. When in doubt, the rules say it may have.
///
/// 1. A Tollgate rejection anywhere in the chain ([`RateLimited`](crate::error::RateLimited),
///    [`CircuitOpen`](crate::error::CircuitOpen), ...) gives the outcome it stands for, with its
///    `retry_after`.
/// 2. Otherwise, the first error in the chain that one of these rules recognises decides:
///    - `tokio::time::error::Elapsed` and `tower::timeout::error::Elapsed` are
///      [`Timeout`](OutcomeKind::Timeout);
///    - a `hyper_util` legacy client error whose `is_connect()` is `ConnectError` (no
///      connection: refused, DNS, a scheme or host the connector cannot use), and so is one for
///      a request the client refused or handed back unsent (its `Canceled`,
///      `UserAbsoluteUriRequired`, `UserUnsupportedVersion` and `UserUnsupportedRequestMethod`
///      kinds); any other is looked into;
///    - a [`hyper::Error`] whose `is_timeout()` is `Timeout`, whose `is_canceled()` (a request
///      canceled before it was sent) is `ConnectError`, whose `is_incomplete_message()` (the
///      connection closed before the response) is `ConnectionLost`; any other is looked into;
///    - a [`std::io::Error`] of kind `TimedOut` is `Timeout`; of kind `ConnectionRefused` or
///      `AddrNotAvailable` is `ConnectError`; of kind `ConnectionReset`, `ConnectionAborted`,
///      `NotConnected`, `BrokenPipe` or `UnexpectedEof` is `ConnectionLost`.
/// 3. Anything else is `ConnectionLost`: a transport failure before a response, after the
///    request may have been sent.
///
/// An [`std::io::Error`] wrapping another error is followed into the wrapped error (its own
/// `source()` skips it), so a timeout or a rejection carried through an `io::Error` is found.
/// The chain is followed at most 32 errors deep.
pub fn classify_error(error: &(dyn std::error::Error + 'static)) -> Outcome {
    let chain = || std::iter::successors(Some(error), |&e| next_in_chain(e)).take(MAX_SOURCE_DEPTH);
    if let Some(outcome) = chain().find_map(crate::error::local_outcome) {
        return outcome;
    }
    let kind = chain()
        .find_map(transport_kind)
        .unwrap_or(OutcomeKind::ConnectionLost);
    Outcome::new(kind)
}

fn response_kind(
    status: StatusCode,
    headers: &HeaderMap,
    error: Option<&ErrorBody>,
) -> OutcomeKind {
    let is = |name: &str| error.is_some_and(|e| e.is(name));
    if is("request_too_large") {
        return OutcomeKind::RequestTooLarge;
    }
    if is("overloaded_error") {
        return OutcomeKind::Overloaded;
    }
    match status.as_u16() {
        429 => rate_limit_kind(headers, error),
        413 => OutcomeKind::RequestTooLarge,
        401 | 403 => OutcomeKind::AuthError,
        408 | 504 => OutcomeKind::Timeout,
        503 | 529 => OutcomeKind::Overloaded,
        400..=499
            if is("authentication_error")
                || is("permission_error")
                || error.is_some_and(ErrorBody::rejects_key) =>
        {
            OutcomeKind::AuthError
        }
        400 | 422 if error.is_some_and(is_context_length_exceeded) => {
            OutcomeKind::ContextLengthExceeded
        }
        400..=499 => OutcomeKind::ClientError,
        500..=599
            if error.is_some_and(|e| e.says_overloaded() || e.status() == Some("UNAVAILABLE")) =>
        {
            OutcomeKind::Overloaded
        }
        500.. => OutcomeKind::ServerError,
        _ => OutcomeKind::ClientError,
    }
}

fn stream_kind(error: &ErrorBody) -> OutcomeKind {
    let status = error.status();
    if error.is("overloaded_error") || error.says_overloaded() || status == Some("UNAVAILABLE") {
        OutcomeKind::Overloaded
    } else if error.is("insufficient_quota") || error.is_daily_quota() {
        OutcomeKind::QuotaExhausted
    } else if error.is("rate_limit_error")
        || error.is("rate_limit_exceeded")
        || status == Some("RESOURCE_EXHAUSTED")
    {
        OutcomeKind::RateLimited(error.dimension().unwrap_or(RateLimitDimension::Unknown))
    } else if error.is("timeout_error") || status == Some("DEADLINE_EXCEEDED") {
        OutcomeKind::Timeout
    } else {
        OutcomeKind::ServerError
    }
}

fn rate_limit_kind(headers: &HeaderMap, error: Option<&ErrorBody>) -> OutcomeKind {
    if let Some(error) = error {
        if error.is("insufficient_quota") {
            return OutcomeKind::QuotaExhausted;
        }
        let message = error.message().unwrap_or_default().trim_start();
        if message
            .get(..17)
            .is_some_and(|m| m.eq_ignore_ascii_case("request too large"))
        {
            return OutcomeKind::RequestTooLarge;
        }
        if error.is_daily_quota() {
            return OutcomeKind::QuotaExhausted;
        }
    }
    let dimension = error
        .and_then(ErrorBody::dimension)
        .or_else(|| providers::exhausted_dimension(headers))
        .unwrap_or(RateLimitDimension::Unknown);
    OutcomeKind::RateLimited(dimension)
}

fn is_context_length_exceeded(error: &ErrorBody) -> bool {
    error.is("context_length_exceeded")
        || error
            .message()
            .is_some_and(|m| contains_any(m, &CONTEXT_LENGTH_MESSAGES))
}

/// The wait the body asks for; none for an exhausted quota, which waiting does not cure.
fn body_wait(error: &ErrorBody) -> Option<std::time::Duration> {
    if error.is("insufficient_quota") {
        None
    } else {
        error.retry_after()
    }
}

/// The next error in the chain: the error an `io::Error` wraps, else `source()`.
/// A response's [`Outcome`]: the one a [`ClassifyLayer`](super::ClassifyLayer) below stored in
/// its extensions, or else what its status and headers say (the body unread).
pub fn response_outcome<B>(response: &http::Response<B>) -> Outcome {
    match response.extensions().get::<Outcome>() {
        Some(outcome) => outcome.clone(),
        None => classify_response(
            response.status(),
            response.headers(),
            &[],
            std::time::SystemTime::now(),
        ),
    }
}

/// Whether `error` (or one it carries) is a refusal by a Tollgate layer that sent nothing
/// upstream: an open breaker ([`CircuitOpen`](crate::error::CircuitOpen)), a local rate limit
/// ([`RateLimited`](crate::error::RateLimited)), client-side throttling
/// ([`Overloaded`](crate::error::Overloaded)) or a queue wait given up
/// ([`QueueTimeout`](crate::error::QueueTimeout)). Such a refusal says nothing about the
/// upstream's load, and waiting it out costs the upstream nothing.
pub fn is_local_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    use crate::error::{CircuitOpen, Overloaded, QueueTimeout, RateLimited};
    std::iter::successors(Some(error), |&e| next_in_chain(e))
        .take(MAX_SOURCE_DEPTH)
        .any(|e| {
            e.is::<CircuitOpen>()
                || e.is::<Overloaded>()
                || e.is::<RateLimited>()
                || e.is::<QueueTimeout>()
        })
}

/// Whether `error` (or an error in its source chain) is a [`DeadlineExceeded`]: the attempt
/// was cut short by the request's own deadline, which says nothing about the upstream.
///
/// [`DeadlineExceeded`]: crate::error::DeadlineExceeded
pub fn is_deadline_expiry(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |&e| next_in_chain(e))
        .take(MAX_SOURCE_DEPTH)
        .any(|e| e.is::<crate::error::DeadlineExceeded>())
}

fn next_in_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    match error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        Some(inner) => Some(inner),
        None => error.source(),
    }
}

fn transport_kind(error: &(dyn std::error::Error + 'static)) -> Option<OutcomeKind> {
    use std::io::ErrorKind;

    if error.is::<tokio::time::error::Elapsed>() || error.is::<tower::timeout::error::Elapsed>() {
        return Some(OutcomeKind::Timeout);
    }
    if let Some(e) = error.downcast_ref::<hyper::Error>() {
        return if e.is_timeout() {
            Some(OutcomeKind::Timeout)
        } else if e.is_canceled() {
            Some(OutcomeKind::ConnectError)
        } else if e.is_incomplete_message() {
            Some(OutcomeKind::ConnectionLost)
        } else {
            None
        };
    }
    if let Some(e) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
        return (e.is_connect() || unsent_by_hyper_util(e)).then_some(OutcomeKind::ConnectError);
    }
    match error.downcast_ref::<std::io::Error>()?.kind() {
        ErrorKind::TimedOut => Some(OutcomeKind::Timeout),
        ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable => {
            Some(OutcomeKind::ConnectError)
        }
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => Some(OutcomeKind::ConnectionLost),
        _ => None,
    }
}

/// Whether hyper-util's legacy client refused a request or handed it back before sending it.
/// Its error kinds are private; their names in its `Display` (`client error (Canceled)`) are
/// what tells them apart. Should they ever change, such an error reads as `ConnectionLost`,
/// the cautious side (`tests/transport_errors.rs` would notice).
fn unsent_by_hyper_util(error: &hyper_util::client::legacy::Error) -> bool {
    const UNSENT: [&str; 4] = [
        "Canceled",
        "UserAbsoluteUriRequired",
        "UserUnsupportedVersion",
        "UserUnsupportedRequestMethod",
    ];
    // Only on the error path: a transport failure is worth one small string.
    let shown = error.to_string();
    shown
        .strip_prefix("client error (")
        .and_then(|rest| rest.strip_suffix(')'))
        .is_some_and(|kind| UNSENT.contains(&kind))
}
