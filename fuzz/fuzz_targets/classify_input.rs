//! The input of `tollgate classify`: a captured response (status line, headers, blank line,
//! body) as `curl -i` or a file writes it, then classified and read for rate limits as the
//! command does. The parser lives in the `tollgate` binary (`crates/cli/src/classify.rs`), which
//! has no library to link, so that file is compiled into this target as it is.
//!
//! Nothing panics, and a parsed response written back out (status line, headers, body) parses
//! to the same status, headers and body.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/cli/src/classify.rs"]
mod classify;

use libfuzzer_sys::fuzz_target;
use tollgate_core::RateLimitSnapshot;
use tollgate_core::classify::classify_response;
use tollgate_fuzz::sample_now;

use crate::classify::{Captured, parse_response};

fuzz_target!(|input: &[u8]| {
    let Ok(captured) = parse_response(input) else {
        return;
    };
    let again = parse_response(&render(&captured))
        .unwrap_or_else(|e| panic!("{captured:?} written back out does not parse: {e}"));
    assert_eq!(again.status, captured.status);
    assert_eq!(again.headers, captured.headers);
    assert_eq!(again.body, captured.body);

    let now = sample_now();
    let _ = classify_response(captured.status, &captured.headers, &captured.body, now);
    let _ = RateLimitSnapshot::from_headers(&captured.headers, None, now);
});

fn render(captured: &Captured) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {}\r\n", captured.status.as_u16()).into_bytes();
    for (name, value) in &captured.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&captured.body);
    out
}
