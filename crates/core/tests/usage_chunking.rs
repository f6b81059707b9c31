//! The SSE parser gives the same events however the stream is cut into chunks, matches a
//! straightforward reading of the WHATWG rules, and never panics.

use proptest::prelude::*;
use tollgate_core::usage::{SseEvent, SseParser};

/// Real provider streams (copies of the documented formats), with their event counts.
const STREAMS: &[(&str, &[u8], usize)] = &[
    (
        "openai_chat",
        include_bytes!("../src/usage/fixtures/openai_chat.sse"),
        7,
    ),
    (
        "openai_chat_error",
        include_bytes!("../src/usage/fixtures/openai_chat_error.sse"),
        3,
    ),
    (
        "openai_responses",
        include_bytes!("../src/usage/fixtures/openai_responses.sse"),
        10,
    ),
    (
        "anthropic",
        include_bytes!("../src/usage/fixtures/anthropic_messages.sse"),
        8,
    ),
    (
        "anthropic_overloaded",
        include_bytes!("../src/usage/fixtures/anthropic_overloaded.sse"),
        5,
    ),
    (
        "gemini",
        include_bytes!("../src/usage/fixtures/gemini.sse"),
        3,
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
struct Owned {
    event: String,
    data: Vec<u8>,
    id: Option<String>,
    retry: Option<u64>,
}

impl From<&SseEvent<'_>> for Owned {
    fn from(event: &SseEvent<'_>) -> Self {
        Self {
            event: event.event.to_owned(),
            data: event.data.to_vec(),
            id: event.id.map(str::to_owned),
            retry: event.retry,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    events: Vec<Owned>,
    clean: bool,
    dropped: u64,
}

fn parse_chunks<'a>(max_event_bytes: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Parsed {
    let mut parser = SseParser::new().with_max_event_bytes(max_event_bytes);
    let mut events = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, |event| events.push(Owned::from(event)));
        assert!(parser.buffered_bytes() <= 3 * max_event_bytes.max(64 * 1024));
    }
    let clean = parser.finish();
    Parsed {
        events,
        clean,
        dropped: parser.dropped_events(),
    }
}

fn split<'a>(body: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&body[start..cut]);
        start = cut;
    }
    chunks.push(&body[start..]);
    chunks
}

/// The spec's algorithm over the whole stream, written as plainly as possible.
fn reference(mut input: &[u8]) -> Parsed {
    if let Some(rest) = input.strip_prefix(b"\xEF\xBB\xBF") {
        input = rest;
    }
    let (mut events, mut data, mut event_type, mut last_id) =
        (Vec::new(), Vec::new(), String::new(), String::new());
    let (mut retry, mut pending) = (None, false);
    let mut lines = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < input.len() {
        match input[at] {
            b'\r' if input.get(at + 1) == Some(&b'\n') => {
                lines.push(&input[start..at]);
                at += 2;
                start = at;
            }
            b'\r' | b'\n' => {
                lines.push(&input[start..at]);
                at += 1;
                start = at;
            }
            _ => at += 1,
        }
    }
    let cut_short = start < input.len();
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                events.push(Owned {
                    event: if event_type.is_empty() {
                        "message".into()
                    } else {
                        event_type.clone()
                    },
                    data: data.clone(),
                    id: (!last_id.is_empty()).then(|| last_id.clone()),
                    retry,
                });
            }
            data.clear();
            event_type.clear();
            pending = false;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        pending = true;
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"event" => event_type = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => last_id = String::from_utf8_lossy(value).into_owned(),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap().parse() {
                    retry = Some(ms);
                }
            }
            _ => {}
        }
    }
    Parsed {
        events,
        clean: !cut_short && !pending,
        dropped: 0,
    }
}

/// Pieces that make the interesting streams likely.
const TOKENS: &[&[u8]] = &[
    b"data",
    b"event",
    b"id",
    b"retry",
    b"foo",
    b":",
    b":",
    b" ",
    b" ",
    b"\n",
    b"\n",
    b"\r",
    b"\r\n",
    b"x",
    b"{\"a\":1}",
    b"42",
    b"\xEF\xBB\xBF",
    b"\xC3\xA9",
    b"\xC3",
    b"\0",
    b"\xFF",
];

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..96).prop_map(|tokens| tokens.concat())
}

const DEFAULT_CAP: usize = 16 * 1024 * 1024;

#[test]
fn provider_streams_parse_to_their_events() {
    for (name, body, count) in STREAMS {
        let parsed = parse_chunks(DEFAULT_CAP, [*body]);
        assert_eq!(parsed.events.len(), *count, "{name}");
        assert!(parsed.clean, "{name}");
        assert_eq!(parsed, reference(body), "{name}");
        assert_eq!(
            parse_chunks(DEFAULT_CAP, body.chunks(1)),
            parsed,
            "{name}, byte by byte"
        );
    }
    let anthropic = parse_chunks(DEFAULT_CAP, [STREAMS[3].1]);
    let types: Vec<&str> = anthropic
        .events
        .iter()
        .map(|event| event.event.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let overloaded = parse_chunks(DEFAULT_CAP, [STREAMS[4].1]);
    let last = overloaded.events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(
        last.data,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
    );
}

#[test]
fn a_stream_cut_mid_event_is_reported() {
    let (_, body, _) = STREAMS[3];
    let cut = &body[..body.len() - 3];
    let parsed = parse_chunks(DEFAULT_CAP, [cut]);
    assert!(!parsed.clean);
    assert_eq!(parsed.events.len(), 7, "the cut event is not dispatched");
}

proptest! {
    #[test]
    fn provider_streams_survive_any_chunking(
        index in 0..STREAMS.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..32),
        crlf in any::<bool>(),
    ) {
        let (_, body, _) = STREAMS[index];
        let body = if crlf {
            String::from_utf8(body.to_vec()).unwrap().replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
        } else {
            body.to_vec()
        };
        prop_assert_eq!(parse_chunks(DEFAULT_CAP, split(&body, &cuts)), parse_chunks(DEFAULT_CAP, [&body[..]]));
    }

    #[test]
    fn matches_the_spec_under_any_chunking(
        body in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        prop_assert_eq!(parse_chunks(DEFAULT_CAP, split(&body, &cuts)), reference(&body));
    }

    #[test]
    fn the_cap_does_not_depend_on_chunking(
        body in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        cap in 0..64usize,
    ) {
        let whole = parse_chunks(cap, [&body[..]]);
        prop_assert_eq!(parse_chunks(cap, split(&body, &cuts)), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        cap in prop::sample::select(&[0usize, 1, 7, 100, DEFAULT_CAP][..]),
    ) {
        let whole = parse_chunks(cap, [&body[..]]);
        prop_assert_eq!(parse_chunks(cap, split(&body, &cuts)), whole);
    }
}
