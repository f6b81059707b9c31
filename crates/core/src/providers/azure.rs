//! Azure OpenAI: OpenAI's header names (a `-1` count means unknown), `retry-after-ms` and
//! `x-ms-retry-after-ms` on 429, and a message that spells out the wait in seconds:
//!
//! ```text
//! Requests to the ChatCompletions_Create Operation ... have exceeded token rate limit of your
//! current OpenAI S0 pricing tier. Please retry after 37 seconds.
//! ```
//!
//! The headers are read by `openai::read` and `retry_after`; this module
//! reads the message.

use std::time::Duration;

use super::{contains_any, wait_after};
use crate::RateLimitDimension;

/// The dimension in an Azure 429 message: "token rate limit" is tokens; "call rate limit" (or,
/// failing that, any mention of requests) is requests.
pub(super) fn dimension_from_message(message: &str) -> Option<RateLimitDimension> {
    if contains_any(message, &["token rate limit"]) {
        Some(RateLimitDimension::Tokens)
    } else if contains_any(message, &["call rate limit", "requests"]) {
        Some(RateLimitDimension::Requests)
    } else {
        None
    }
}

/// The wait in "Please retry after 37 seconds" (also "retry after 1 second").
pub(super) fn retry_after_from_message(message: &str) -> Option<Duration> {
    wait_after(message, "retry after ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let tokens = "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version \
                      2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. \
                      Please retry after 37 seconds.";
        assert_eq!(
            dimension_from_message(tokens),
            Some(RateLimitDimension::Tokens)
        );
        assert_eq!(
            retry_after_from_message(tokens),
            Some(Duration::from_secs(37))
        );
        let calls = "... have exceeded call rate limit of your current OpenAI S0 pricing tier. \
                     Please retry after 1 second.";
        assert_eq!(
            dimension_from_message(calls),
            Some(RateLimitDimension::Requests)
        );
        assert_eq!(
            retry_after_from_message(calls),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            dimension_from_message("Too many requests"),
            Some(RateLimitDimension::Requests)
        );
        assert_eq!(dimension_from_message("busy"), None);
    }
}
