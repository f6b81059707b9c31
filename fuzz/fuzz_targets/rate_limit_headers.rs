//! Rate-limit headers: a block of `name: value` lines read as every provider's family
//! (`RateLimitSnapshot::from_headers`), the wait (`providers::retry_after`) and
//! `x-should-retry`. Nothing panics, a header wait is never above a week, and a window the
//! headers fill always has a field.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tollgate_core::providers::{retry_after, should_retry};
use tollgate_core::{Provider, RateLimitSnapshot};
use tollgate_fuzz::{header_map, sample_now};

const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

fuzz_target!(|data: &[u8]| {
    let headers = header_map(data);
    let now = sample_now();
    for provider in std::iter::once(None).chain(Provider::ALL.map(Some)) {
        let snapshot = RateLimitSnapshot::from_headers(&headers, provider, now);
        for window in [
            snapshot.requests,
            snapshot.tokens,
            snapshot.input_tokens,
            snapshot.output_tokens,
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                !window.is_empty(),
                "{provider:?}: an empty window {window:?}"
            );
        }
    }
    let wait = retry_after(&headers, now);
    assert!(wait.is_none_or(|wait| wait <= WEEK), "{wait:?}");
    let _ = should_retry(&headers);
});
