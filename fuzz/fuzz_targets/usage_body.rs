//! The usage scanners behind `ObservedBody`, which `ClassifyLayer` wraps every response body
//! in: the same bytes as a JSON body and as an SSE stream, cut into chunks in many ways, end
//! with the same usage, the same late error and the same byte count as when read whole.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use libfuzzer_sys::fuzz_target;
use tollgate_core::body::{EndReason, ObservedBody, StreamEnd};
use tollgate_fuzz::{ChunkedBody, chunkings, drain};

fn read(whole: &Bytes, chunks: &[&[u8]], headers: &HeaderMap) -> StreamEnd {
    let (body, end) = ObservedBody::new(ChunkedBody::new(whole, chunks), headers);
    drain(body);
    end.ended().expect("a body read to its end has ended")
}

fuzz_target!(|input: &[u8]| {
    let whole = Bytes::copy_from_slice(input);
    let data = &whole[..];
    let json = HeaderMap::new();
    let mut sse = HeaderMap::new();
    sse.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    for headers in [json, sse] {
        let expected = read(&whole, &[data], &headers);
        assert_eq!(expected.reason, EndReason::Complete);
        assert_eq!(expected.bytes, data.len() as u64);
        for chunks in chunkings(data) {
            assert_eq!(
                read(&whole, &chunks, &headers),
                expected,
                "chunks {chunks:?}"
            );
        }
    }
});
