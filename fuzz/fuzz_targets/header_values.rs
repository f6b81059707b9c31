//! The single-value parsers of `tollgate_core::duration`: `Retry-After` (seconds or an
//! HTTP-date), RFC 3339 timestamps (Anthropic's resets) and protobuf durations (Gemini's
//! `retryDelay`). None panics; a `Retry-After` wait is never above a week; seconds read the same
//! as a `Retry-After` and as a protobuf duration; a parsed timestamp re-rendered as RFC 3339
//! parses back to the same instant.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollgate_core::duration::{parse_protobuf_duration, parse_retry_after, parse_rfc3339};
use tollgate_fuzz::sample_now;

const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = sample_now();
    let wait = parse_retry_after(text, now);
    assert!(wait.is_none_or(|wait| wait <= WEEK), "{text:?}: {wait:?}");

    let trimmed = text.trim();
    if trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let protobuf = parse_protobuf_duration(&format!("{trimmed}s")).filter(|d| *d <= WEEK);
        assert_eq!(parse_retry_after(trimmed, now), protobuf, "{trimmed:?}");
    }
    let _ = parse_protobuf_duration(text);

    if let Some(at) = parse_rfc3339(text) {
        let rendered = OffsetDateTime::from(at).format(&Rfc3339);
        if let Ok(rendered) = rendered {
            assert_eq!(
                parse_rfc3339(&rendered),
                Some(at),
                "{text:?} -> {rendered:?}"
            );
        }
        // A date before the epoch is still a time the platform holds.
        let _ = at.duration_since(SystemTime::UNIX_EPOCH);
    }
});
