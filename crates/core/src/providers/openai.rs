//! OpenAI (and Groq, Azure, OpenAI-compatible servers): `x-ratelimit-*` headers with Go reset
//! durations, and the limit and wait spelled out in the 429 message.
//!
//! ```text
//! x-ratelimit-limit-requests: 10000        x-ratelimit-remaining-tokens: 49500
//! x-ratelimit-reset-requests: 6m0s         x-ratelimit-reset-tokens: 12ms
//! {"error":{"message":"Rate limit reached for gpt-4o-mini ... on tokens per min (TPM): ...
//!  Please try again in 1.146s. ...","type":"tokens","param":null,"code":"rate_limit_exceeded"}}
//! ```

use std::time::Duration;

use http::HeaderMap;

use super::{MINUTE, contains_any, header_count, header_str, wait_after, window};
use crate::duration::parse_go_duration;
use crate::{RateLimitDimension, RateLimitSnapshot};

/// Fills the request and token windows from the `x-ratelimit-*-{requests,tokens}` headers. The
/// token limit is per minute everywhere; the request limit is per `requests_period` (a day for
/// Groq, a minute elsewhere).
pub(super) fn read(
    headers: &HeaderMap,
    requests_period: Duration,
    snapshot: &mut RateLimitSnapshot,
) {
    snapshot.requests = snapshot.requests.or_else(|| {
        window(
            header_count(headers, name!("x-ratelimit-limit-requests")),
            header_count(headers, name!("x-ratelimit-remaining-requests")),
            header_str(headers, name!("x-ratelimit-reset-requests")).and_then(parse_go_duration),
            requests_period,
        )
    });
    snapshot.tokens = snapshot.tokens.or_else(|| {
        window(
            header_count(headers, name!("x-ratelimit-limit-tokens")),
            header_count(headers, name!("x-ratelimit-remaining-tokens")),
            header_str(headers, name!("x-ratelimit-reset-tokens")).and_then(parse_go_duration),
            MINUTE,
        )
    });
}

/// The dimension an OpenAI error `type` names on a 429 (`"tokens"`, `"requests"`, ...).
pub(super) fn dimension_from_type(error_type: &str) -> Option<RateLimitDimension> {
    match error_type {
        "tokens" => Some(RateLimitDimension::Tokens),
        "requests" => Some(RateLimitDimension::Requests),
        "input_tokens" => Some(RateLimitDimension::InputTokens),
        "output_tokens" => Some(RateLimitDimension::OutputTokens),
        _ => None,
    }
}

/// The dimension in "... on tokens per min (TPM): Limit 50000 ...". Per-day limits (`RPD`,
/// `TPD`) map to the same dimensions: the limiter cares what to ration, not over which period.
pub(super) fn dimension_from_message(message: &str) -> Option<RateLimitDimension> {
    if contains_any(
        message,
        &["(TPM)", "(TPD)", "tokens per min", "tokens per day"],
    ) {
        Some(RateLimitDimension::Tokens)
    } else if contains_any(
        message,
        &["(RPM)", "(RPD)", "requests per min", "requests per day"],
    ) {
        Some(RateLimitDimension::Requests)
    } else {
        None
    }
}

/// The wait in "Please try again in 1.146s" (also `20ms`, `6m0s`).
pub(super) fn retry_after_from_message(message: &str) -> Option<Duration> {
    wait_after(message, "try again in ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let tpm = "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM): \
                   Limit 50000, Used 47949, Requested 3006. Please try again in 1.146s. Visit ...";
        assert_eq!(
            dimension_from_message(tpm),
            Some(RateLimitDimension::Tokens)
        );
        assert_eq!(
            retry_after_from_message(tpm),
            Some(Duration::from_millis(1146))
        );
        let rpd = "Rate limit reached for model `llama` on requests per day (RPD): Limit 14400. \
                   Please try again in 6m0s.";
        assert_eq!(
            dimension_from_message(rpd),
            Some(RateLimitDimension::Requests)
        );
        assert_eq!(
            retry_after_from_message(rpd),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            retry_after_from_message("Please try again in 20ms."),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            dimension_from_message("on tokens per day (TPD)"),
            Some(RateLimitDimension::Tokens)
        );
        assert_eq!(
            dimension_from_message("(RPM)"),
            Some(RateLimitDimension::Requests)
        );
        assert_eq!(dimension_from_message("Something went wrong"), None);
        assert_eq!(retry_after_from_message("Please try again later."), None);
    }

    #[test]
    fn types() {
        assert_eq!(
            dimension_from_type("tokens"),
            Some(RateLimitDimension::Tokens)
        );
        assert_eq!(
            dimension_from_type("requests"),
            Some(RateLimitDimension::Requests)
        );
        assert_eq!(
            dimension_from_type("input_tokens"),
            Some(RateLimitDimension::InputTokens)
        );
        assert_eq!(
            dimension_from_type("output_tokens"),
            Some(RateLimitDimension::OutputTokens)
        );
        assert_eq!(dimension_from_type("insufficient_quota"), None);
    }
}
