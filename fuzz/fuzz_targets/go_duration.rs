//! `parse_go_duration` (OpenAI's `x-ratelimit-reset-*`) and its renderer: parsing never panics,
//! what parses renders to a string that parses back to the same duration, and any duration
//! renders to a string that parses back exactly.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tollgate_core::duration::{format_go_duration, parse_go_duration};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(parsed) = parse_go_duration(text)
    {
        let rendered = format_go_duration(parsed);
        assert_eq!(
            parse_go_duration(&rendered),
            Some(parsed),
            "{text:?} parsed as {parsed:?}, rendered as {rendered:?}"
        );
    }
    // The same bytes as a duration: every value a Duration can hold.
    if let Some((secs, rest)) = data.split_first_chunk::<8>()
        && let Some(nanos) = rest.first_chunk::<4>()
    {
        let duration = Duration::new(
            u64::from_le_bytes(*secs),
            u32::from_le_bytes(*nanos) % 1_000_000_000,
        );
        let rendered = format_go_duration(duration);
        assert_eq!(
            parse_go_duration(&rendered),
            Some(duration),
            "{duration:?} rendered as {rendered:?}"
        );
    }
});
