//! `SseParser`, the incremental `text/event-stream` parser: the same stream cut into chunks in
//! many ways (a byte at a time, fixed sizes, cuts drawn from the input) gives the same events,
//! the same clean-end verdict and the same count of dropped events as the stream fed whole —
//! with the default cap and with a small one, so that dropping oversized events is exercised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::usage::SseParser;
use tollgate_fuzz::chunkings;

/// An event as owned values, to compare runs.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    event: String,
    data: Vec<u8>,
    id: Option<String>,
    retry: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
struct Run {
    events: Vec<Event>,
    clean: bool,
    dropped: u64,
}

fn run(chunks: &[&[u8]], cap: Option<usize>) -> Run {
    let mut parser = SseParser::new();
    if let Some(cap) = cap {
        parser = parser.with_max_event_bytes(cap);
    }
    let mut events = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, |e| {
            events.push(Event {
                event: e.event.to_owned(),
                data: e.data.to_vec(),
                id: e.id.map(str::to_owned),
                retry: e.retry,
            });
        });
    }
    let clean = parser.finish();
    Run {
        events,
        clean,
        dropped: parser.dropped_events(),
    }
}

fuzz_target!(|stream: &[u8]| {
    // A cap between 1 and 64 bytes, from the stream's length: small enough to drop events.
    let small_cap = stream.len() % 64 + 1;
    for cap in [None, Some(small_cap)] {
        let whole = run(&[stream], cap);
        for chunks in chunkings(stream) {
            let cut = run(&chunks, cap);
            assert_eq!(cut, whole, "cap {cap:?}, chunks {chunks:?}");
        }
    }
});
