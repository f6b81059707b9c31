//! Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*` headers with
//! RFC 3339 reset timestamps, and limits named in prose ("50,000 input tokens per minute").
//!
//! ```text
//! anthropic-ratelimit-input-tokens-limit: 40000
//! anthropic-ratelimit-input-tokens-remaining: 0          (token counts rounded to thousands)
//! anthropic-ratelimit-input-tokens-reset: 2025-08-21T12:40:59Z
//! ```
//!
//! A reset is a point in time on Anthropic's clock, so it is made relative to the response's
//! own `date` header when there is one: a skewed local clock then cannot stretch the wait.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use super::{MINUTE, contains_any, header_count, header_str, response_date, window};
use crate::duration::parse_rfc3339;
use crate::{RateLimitDimension, RateLimitSnapshot, RateLimitWindow};

/// `[limit, remaining, reset]` header names of one limit.
type Names = [HeaderName; 3];

const REQUESTS: Names = [
    HeaderName::from_static("anthropic-ratelimit-requests-limit"),
    HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
    HeaderName::from_static("anthropic-ratelimit-requests-reset"),
];
const TOKENS: Names = [
    HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
];
const INPUT_TOKENS: Names = [
    HeaderName::from_static("anthropic-ratelimit-input-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
];
const OUTPUT_TOKENS: Names = [
    HeaderName::from_static("anthropic-ratelimit-output-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
];

/// Fills every window from the `anthropic-ratelimit-*` headers (all per minute). Resets are
/// relative to the `date` header, else to `now`; a reset in the past is zero.
pub(super) fn read(headers: &HeaderMap, now: SystemTime, snapshot: &mut RateLimitSnapshot) {
    let base = response_date(headers).unwrap_or(now);
    let read = |names: Names| -> Option<RateLimitWindow> {
        let [limit, remaining, reset] = names;
        let reset = header_str(headers, &reset)
            .and_then(parse_rfc3339)
            .map(|at| at.duration_since(base).unwrap_or(Duration::ZERO));
        window(
            header_count(headers, &limit),
            header_count(headers, &remaining),
            reset,
            MINUTE,
        )
    };
    snapshot.requests = snapshot.requests.or_else(|| read(REQUESTS));
    snapshot.tokens = snapshot.tokens.or_else(|| read(TOKENS));
    snapshot.input_tokens = snapshot.input_tokens.or_else(|| read(INPUT_TOKENS));
    snapshot.output_tokens = snapshot.output_tokens.or_else(|| read(OUTPUT_TOKENS));
}

/// The limit a 429 hit according to Anthropic's headers: the first whose `remaining` is 0, the
/// specific ones (input, output tokens) before requests and the combined token count.
pub(crate) fn exhausted_dimension(headers: &HeaderMap) -> Option<RateLimitDimension> {
    [
        (INPUT_TOKENS, RateLimitDimension::InputTokens),
        (OUTPUT_TOKENS, RateLimitDimension::OutputTokens),
        (REQUESTS, RateLimitDimension::Requests),
        (TOKENS, RateLimitDimension::Tokens),
    ]
    .into_iter()
    .find(|([_, remaining, _], _)| header_count(headers, remaining) == Some(0))
    .map(|(_, dimension)| dimension)
}

/// The dimension in "... rate limit of 50,000 input tokens per minute ...".
pub(super) fn dimension_from_message(message: &str) -> Option<RateLimitDimension> {
    if contains_any(message, &["input tokens per minute"]) {
        Some(RateLimitDimension::InputTokens)
    } else if contains_any(message, &["output tokens per minute"]) {
        Some(RateLimitDimension::OutputTokens)
    } else if contains_any(message, &["requests per minute"]) {
        Some(RateLimitDimension::Requests)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::tests::headers;

    #[test]
    fn resets_are_relative_to_the_date_header_and_never_negative() {
        let map = headers(&[
            ("date", "Thu, 21 Aug 2025 12:40:00 GMT"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
            ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:39:00Z"),
            ("anthropic-ratelimit-input-tokens-reset", "garbage"),
        ]);
        let mut snapshot = RateLimitSnapshot::default();
        read(&map, SystemTime::UNIX_EPOCH, &mut snapshot);
        let reset = |w: Option<RateLimitWindow>| w.and_then(|w| w.reset);
        assert_eq!(reset(snapshot.requests), Some(Duration::from_secs(59)));
        assert_eq!(reset(snapshot.tokens), Some(Duration::ZERO));
        assert_eq!(snapshot.input_tokens, None);
    }

    #[test]
    fn exhausted_prefers_the_specific_dimension() {
        let map = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            ("anthropic-ratelimit-input-tokens-remaining", "12000"),
        ]);
        assert_eq!(
            exhausted_dimension(&map),
            Some(RateLimitDimension::OutputTokens)
        );
        assert_eq!(exhausted_dimension(&HeaderMap::new()), None);
    }

    #[test]
    fn messages() {
        let input = "This request would exceed the rate limit for your organization of 50,000 \
                     input tokens per minute.";
        assert_eq!(
            dimension_from_message(input),
            Some(RateLimitDimension::InputTokens)
        );
        let output = "... of 8,000 output tokens per minute ...";
        assert_eq!(
            dimension_from_message(output),
            Some(RateLimitDimension::OutputTokens)
        );
        let requests = "... of 50 requests per minute ...";
        assert_eq!(
            dimension_from_message(requests),
            Some(RateLimitDimension::Requests)
        );
        assert_eq!(dimension_from_message("Overloaded"), None);
    }
}
