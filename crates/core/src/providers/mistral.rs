//! Mistral: a per-minute token budget in `x-ratelimitbysize-{limit,remaining}-minute`.
//!
//! Mistral also sends `-month` counterparts; a monthly budget is billing, not pacing, so the
//! snapshot does not carry it.

use http::HeaderMap;

use super::{MINUTE, header_count, window};
use crate::RateLimitSnapshot;

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
