//! Together: per-second limits, `x-ratelimit-{limit,remaining,reset}` for requests and
//! `x-tokenlimit-{limit,remaining}` for tokens.
//!
//! The reset is seen both as a bare number of seconds (`1`) and as a Go duration (`1s`), so it
//! is read leniently.

use http::HeaderMap;

use super::{SECOND, header_count, header_str, window};
use crate::RateLimitSnapshot;
use crate::duration::parse_reset_lenient;

/// Fills the request and token windows (per second).
pub(super) fn read(headers: &HeaderMap, snapshot: &mut RateLimitSnapshot) {
    snapshot.requests = snapshot.requests.or_else(|| {
        window(
            header_count(headers, name!("x-ratelimit-limit")),
            header_count(headers, name!("x-ratelimit-remaining")),
            header_str(headers, name!("x-ratelimit-reset")).and_then(parse_reset_lenient),
            SECOND,
        )
    });
    snapshot.tokens = snapshot.tokens.or_else(|| {
        window(
            header_count(headers, name!("x-tokenlimit-limit")),
            header_count(headers, name!("x-tokenlimit-remaining")),
            None,
            SECOND,
        )
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::RateLimitWindow;

    #[test]
    fn reads_requests_and_tokens_per_second() {
        let mut map = HeaderMap::new();
        map.insert("x-ratelimit-limit", "10".parse().unwrap());
        map.insert("x-ratelimit-remaining", "9".parse().unwrap());
        map.insert("x-ratelimit-reset", "1".parse().unwrap());
        map.insert("x-tokenlimit-limit", "2000".parse().unwrap());
        let mut snapshot = RateLimitSnapshot::default();
        read(&map, &mut snapshot);
        let second = Some(Duration::from_secs(1));
        let requests = RateLimitWindow {
            limit: Some(10),
            remaining: Some(9),
            reset: second,
            period: second,
        };
        let tokens = RateLimitWindow {
            limit: Some(2000),
            remaining: None,
            reset: None,
            period: second,
        };
        assert_eq!(snapshot.requests, Some(requests));
        assert_eq!(snapshot.tokens, Some(tokens));
    }
}
