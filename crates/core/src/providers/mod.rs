//! What each provider says about its limits and errors, read from headers and error bodies.
//!
//! Providers agree on nothing: OpenAI and Groq send `x-ratelimit-*-requests` with Go reset
//! durations, Anthropic `anthropic-ratelimit-*` with RFC 3339 timestamps, Mistral and Together
//! names of their own; the wait before a retry hides in `retry-after-ms`, `x-ms-retry-after-ms`,
//! `retry-after`, a Gemini `RetryInfo` detail or the prose of an OpenAI or Azure message. This
//! module reads them all (one file per provider) so that the rest of Tollgate sees one
//! [`RateLimitSnapshot`] and one wait, and never re-parses a header.
//!
//! Header parsing runs on every response, so it allocates nothing; error bodies are parsed only
//! for failed responses. Nothing here fails: a value that does not parse is ignored.

/// A header name built at compile time: a lookup by it skips parsing the name.
macro_rules! name {
    ($name:literal) => {
        &const { http::HeaderName::from_static($name) }
    };
}

mod anthropic;
mod azure;
mod error_body;
mod gemini;
mod mistral;
mod openai;
mod together;

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use crate::duration::{parse_decimal, parse_go_duration, parse_millis, parse_retry_after};
use crate::{Provider, RateLimitDimension, RateLimitSnapshot, RateLimitWindow};

pub(crate) use self::anthropic::exhausted_dimension;
pub(crate) use self::error_body::ErrorBody;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads every rate-limit header family of `provider` (every family present when `None`);
/// see [`RateLimitSnapshot::from_headers`].
///
/// Gemini sends no limit headers and an OpenAI-compatible server (or a proxy in front of any
/// provider) may send any family, so both read every family too. When several families fill
/// the same window, the first wins in the order OpenAI, Anthropic, Mistral, Together.
pub(crate) fn snapshot_from_headers(
    headers: &HeaderMap,
    provider: Option<Provider>,
    now: SystemTime,
) -> RateLimitSnapshot {
    let mut snapshot = RateLimitSnapshot::default();
    match provider {
        Some(Provider::OpenAi | Provider::AzureOpenAi | Provider::Llama) => {
            openai::read(headers, MINUTE, &mut snapshot)
        }
        Some(Provider::Groq) => openai::read(headers, DAY, &mut snapshot),
        Some(Provider::Anthropic) => anthropic::read(headers, now, &mut snapshot),
        Some(Provider::Mistral) => mistral::read(headers, &mut snapshot),
        Some(Provider::Together) => together::read(headers, &mut snapshot),
        Some(Provider::Gemini | Provider::OpenAiCompatible) | None => {
            openai::read(headers, MINUTE, &mut snapshot);
            anthropic::read(headers, now, &mut snapshot);
            mistral::read(headers, &mut snapshot);
            together::read(headers, &mut snapshot);
        }
    }
    snapshot
}

/// How long the response's headers ask the client to wait before another attempt.
///
/// Reads, first found wins: `retry-after-ms` (milliseconds, may be fractional), Azure's
/// `x-ms-retry-after-ms`, then `retry-after` (seconds, fractional seconds, or an HTTP-date made
/// relative to the response's `date` header when present, else to `now`). A value that does not
/// parse, or asks for more than a week, is skipped.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use tollgate_core::providers::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "2".parse().unwrap());
/// headers.insert("retry-after-ms", "1500".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_millis(1500)));
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    header_str(headers, name!("retry-after-ms"))
        .and_then(parse_millis)
        .or_else(|| header_str(headers, name!("x-ms-retry-after-ms")).and_then(parse_millis))
        .or_else(|| {
            let base = response_date(headers).unwrap_or(now);
            parse_retry_after(header_str(headers, name!("retry-after"))?, base)
        })
}

/// The provider's `x-should-retry` verdict (`true` or `false`, any case), which overrides the
/// status-code rule in [`Outcome::is_retryable`](crate::Outcome::is_retryable).
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    let value = header_str(headers, name!("x-should-retry"))?;
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The limit an error message names: Anthropic's input and output token limits first (they
/// are the most specific), then OpenAI's `(TPM)`/`(RPM)`/`(TPD)`/`(RPD)`, then Azure's words.
pub(crate) fn dimension_from_message(message: &str) -> Option<RateLimitDimension> {
    anthropic::dimension_from_message(message)
        .or_else(|| openai::dimension_from_message(message))
        .or_else(|| azure::dimension_from_message(message))
        .or_else(|| mistral::dimension_from_message(message))
}

/// The wait an error message asks for: OpenAI's "Please try again in 1.146s", then Azure's
/// "Please retry after 37 seconds".
pub(crate) fn retry_after_from_message(message: &str) -> Option<Duration> {
    openai::retry_after_from_message(message).or_else(|| azure::retry_after_from_message(message))
}

/// Reads the wait in the words right after `phrase` in `message`: a Go duration (`1.146s`,
/// `6m0s`) or a number and a unit word (`37 seconds`, `1 second`, `500 milliseconds`).
fn wait_after(message: &str, phrase: &str) -> Option<Duration> {
    let start = find_ignore_ascii_case(message, phrase)? + phrase.len();
    let rest = message.get(start..)?.trim_start();
    let (number, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let number = number.trim_end_matches(['.', ',', ';', ':', ')']);
    if let Some(wait) = parse_go_duration(number) {
        return Some(wait);
    }
    let unit = tail.trim_start();
    let unit = &unit[..unit
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(unit.len())];
    let unit_nanos = match unit.to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hour" | "hours" => 3_600_000_000_000,
        _ => return None,
    };
    parse_decimal(number, unit_nanos)
}

/// Whether `haystack` contains any of `needles`, ignoring ASCII case.
pub(crate) fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles
        .iter()
        .any(|needle| find_ignore_ascii_case(haystack, needle).is_some())
}

/// The byte offset of the first occurrence of the ASCII `needle` in `haystack`, ignoring case.
fn find_ignore_ascii_case(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// A header's value without surrounding whitespace, if it is visible ASCII.
fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// A count header: a non-negative integer (a decimal is truncated; Azure's `-1` is `None`).
fn header_count(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let value = header_str(headers, name)?;
    value.parse().ok().or_else(|| {
        let (int, frac) = value.split_once('.')?;
        frac.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| int.parse().ok())?
    })
}

/// The response's `date` header.
fn response_date(headers: &HeaderMap) -> Option<SystemTime> {
    httpdate::parse_http_date(header_str(headers, name!("date"))?).ok()
}

/// A window over `period`, unless nothing about it is known.
fn window(
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
    period: Duration,
) -> Option<RateLimitWindow> {
    let window = RateLimitWindow {
        limit,
        remaining,
        reset,
        period: Some(period),
    };
    (!window.is_empty()).then_some(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header map from pairs, for the provider modules' tests too.
    pub(super) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(name, value)| (name.parse().unwrap(), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn counts_accept_integers_and_truncate_decimals() {
        let map = headers(&[
            ("a", "42"),
            ("b", " 7.9 "),
            ("c", "-1"),
            ("d", "x"),
            ("e", "1.x"),
        ]);
        let got: Vec<_> = ["a", "b", "c", "d", "e", "f"]
            .map(|n| header_count(&map, &HeaderName::from_static(n)))
            .to_vec();
        assert_eq!(got, [Some(42), Some(7), None, None, None, None]);
    }

    #[test]
    fn waits_in_prose() {
        let ms = Duration::from_millis;
        assert_eq!(
            wait_after("Please try again in 1.146s. Visit", "try again in "),
            Some(ms(1146))
        );
        assert_eq!(
            wait_after("try again in 59 seconds.", "try again in "),
            Some(ms(59_000))
        );
        assert_eq!(
            wait_after("Retry after 1 second", "retry after "),
            Some(ms(1000))
        );
        assert_eq!(
            wait_after("retry after 500 ms", "retry after "),
            Some(ms(500))
        );
        assert_eq!(wait_after("retry after soon", "retry after "), None);
        assert_eq!(wait_after("retry after ", "retry after "), None);
        assert_eq!(wait_after("no phrase", "retry after "), None);
        assert_eq!(find_ignore_ascii_case("héllo WORLD", "world"), Some(7));
    }

    #[test]
    fn should_retry_is_case_insensitive() {
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "TRUE")])),
            Some(true)
        );
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "false")])),
            Some(false)
        );
        assert_eq!(should_retry(&headers(&[("x-should-retry", "maybe")])), None);
        assert_eq!(should_retry(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_order_and_fallthrough() {
        let now = SystemTime::UNIX_EPOCH;
        let wait = |pairs| retry_after(&headers(pairs), now);
        assert_eq!(
            wait(&[("retry-after-ms", "x"), ("x-ms-retry-after-ms", "20")]),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "-1"), ("retry-after", "3")]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            wait(&[
                ("date", "Thu, 01 Jan 1970 00:01:00 GMT"),
                ("retry-after", "Thu, 01 Jan 1970 00:01:30 GMT")
            ]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait(&[("retry-after", "Thu, 01 Jan 1970 00:01:30 GMT")]),
            Some(Duration::from_secs(90))
        );
        assert_eq!(wait(&[]), None);
    }
}
