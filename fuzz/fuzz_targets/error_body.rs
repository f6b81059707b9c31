//! Error bodies: the same bytes classified as the body of every interesting status
//! (`classify_response`) and as the data of a late SSE `event: error`
//! (`classify_stream_error`). Nothing panics, the outcome keeps the status, a 2xx is a success
//! whatever the body, and a stream error is never a success.
#![no_main]

use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;
use tollgate_core::OutcomeKind;
use tollgate_core::classify::{classify_response, classify_stream_error};
use tollgate_fuzz::sample_now;

const STATUSES: [u16; 14] = [
    200, 400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504, 529,
];

fuzz_target!(|body: &[u8]| {
    let headers = HeaderMap::new();
    for code in STATUSES {
        let status = StatusCode::from_u16(code).expect("a valid status");
        let outcome = classify_response(status, &headers, body, sample_now());
        assert_eq!(outcome.status, Some(status));
        assert_eq!(
            outcome.kind == OutcomeKind::Success,
            status.is_success(),
            "{outcome:?}"
        );
    }
    let outcome = classify_stream_error(body);
    assert_ne!(outcome.kind, OutcomeKind::Success);
    assert_eq!(outcome.status, None);
});
