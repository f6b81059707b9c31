//! Mistral: a per-minute token budget in `x-ratelimitbysize-{limit,remaining}-minute`.
//!
//! Mistral also sends `-month` counterparts; a monthly budget is billing, not pacing, so the
//! snapshot does not carry it.

use http::HeaderMap;

use super::{MINUTE, header_count, window};
use crate::{RateLimitDimension, RateLimitSnapshot};

/// The dimension in Mistral's 429 messages: "Requests rate limit exceeded", "Tokens rate limit
/// exceeded".
pub(super) fn dimension_from_message(message: &str) -> Option<RateLimitDimension> {
    let message = message.trim_start();
    if message.starts_with("Tokens rate limit") {
        Some(RateLimitDimension::Tokens)
    } else if message.starts_with("Requests rate limit") {
        Some(RateLimitDimension::Requests)
    } else {
        None
    }
}

/// Fills the token window (per minute, no reset) from the `x-ratelimitbysize-*-minute` headers.
pub(super) fn read(headers: &HeaderMap, snapshot: &mut RateLimitSnapshot) {
    snapshot.tokens = snapshot.tokens.or_else(|| {
        window(
            header_count(headers, name!("x-ratelimitbysize-limit-minute")),
            header_count(headers, name!("x-ratelimitbysize-remaining-minute")),
            None,
            MINUTE,
        )
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::RateLimitWindow;

    #[test]
    fn rate_limit_messages_name_the_dimension() {
        assert_eq!(
            dimension_from_message("Tokens rate limit exceeded"),
            Some(RateLimitDimension::Tokens)
        );
        assert_eq!(
            dimension_from_message("Requests rate limit exceeded"),
            Some(RateLimitDimension::Requests)
        );
        assert_eq!(
            dimension_from_message("Service tier capacity exceeded"),
            None
        );
    }

    #[test]
    fn reads_the_minute_and_ignores_the_month() {
        let mut map = HeaderMap::new();
        map.insert(
            "x-ratelimitbysize-remaining-minute",
            "1500".parse().unwrap(),
        );
        map.insert("x-ratelimitbysize-limit-month", "1000000".parse().unwrap());
        let mut snapshot = RateLimitSnapshot::default();
        read(&map, &mut snapshot);
        let want = RateLimitWindow {
            limit: None,
            remaining: Some(1500),
            reset: None,
            period: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            snapshot,
            RateLimitSnapshot {
                tokens: Some(want),
                ..Default::default()
            }
        );
    }
}
