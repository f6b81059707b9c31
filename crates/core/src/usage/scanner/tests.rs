use http::HeaderValue;
use proptest::prelude::*;

use super::*;
use crate::usage::json::MAX_USAGE_OBJECT_BYTES;

const OVERLOADED: &[u8] =
    br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const OPENAI_SERVER_ERROR: &[u8] = br#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;

struct Fixture {
    name: &'static str,
    body: &'static [u8],
    format: BodyFormat,
    usage: Option<Usage>,
    error: Option<&'static [u8]>,
}

const fn usage(input: u64, output: u64, cache_read: u64, cache_creation: u64) -> Option<Usage> {
    Some(Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_input_tokens: cache_read,
        cache_creation_input_tokens: cache_creation,
    })
}

macro_rules! fixture {
    ($file:literal, $format:ident, $usage:expr, $error:expr) => {
        Fixture {
            name: $file,
            body: include_bytes!(concat!("../fixtures/", $file)),
            format: BodyFormat::$format,
            usage: $usage,
            error: $error,
        }
    };
}

const FIXTURES: &[Fixture] = &[
    fixture!("openai_chat.json", Json, usage(1117, 46, 1024, 0), None),
    fixture!("openai_chat.sse", Sse, usage(19, 10, 0, 0), None),
    fixture!(
        "openai_chat_error.sse",
        Sse,
        None,
        Some(OPENAI_SERVER_ERROR)
    ),
    fixture!("openai_embeddings.json", Json, usage(16, 0, 0, 0), None),
    fixture!("openai_responses.sse", Sse, usage(2037, 11, 1920, 0), None),
    fixture!(
        "anthropic_messages.json",
        Json,
        usage(5608, 24, 4096, 1500),
        None
    ),
    fixture!(
        "anthropic_messages.sse",
        Sse,
        usage(2073, 15, 2048, 0),
        None
    ),
    fixture!(
        "anthropic_overloaded.sse",
        Sse,
        usage(472, 2, 0, 0),
        Some(OVERLOADED)
    ),
    fixture!("gemini.json", Json, usage(2105, 263, 2048, 0), None),
    fixture!("gemini.sse", Sse, usage(9, 10, 0, 0), None),
];

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    usage: Option<Usage>,
    error: Option<Vec<u8>>,
    bytes: u64,
}

fn track<'a>(mut tracker: UsageTracker, chunks: impl IntoIterator<Item = &'a [u8]>) -> Seen {
    for chunk in chunks {
        tracker.feed(chunk);
    }
    tracker.finish();
    Seen {
        usage: tracker.usage(),
        error: tracker.error_event().map(<[u8]>::to_vec),
        bytes: tracker.bytes_seen(),
    }
}

fn whole(format: BodyFormat, body: &[u8]) -> Seen {
    track(UsageTracker::new(format), [body])
}

/// `body` cut at `cuts` (any order, repeats give empty chunks).
fn split<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut.min(body.len())).collect();
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

#[test]
fn fixtures_give_the_exact_usage_and_error() {
    for fixture in FIXTURES {
        let seen = whole(fixture.format, fixture.body);
        assert_eq!(seen.usage, fixture.usage, "{}", fixture.name);
        assert_eq!(seen.error.as_deref(), fixture.error, "{}", fixture.name);
        assert_eq!(seen.bytes, fixture.body.len() as u64, "{}", fixture.name);
    }
}

#[test]
fn fixtures_fed_byte_by_byte() {
    for fixture in FIXTURES {
        let seen = track(UsageTracker::new(fixture.format), fixture.body.chunks(1));
        assert_eq!(
            seen,
            whole(fixture.format, fixture.body),
            "{}",
            fixture.name
        );
    }
}

#[test]
fn sse_fixtures_with_other_line_ends() {
    for fixture in FIXTURES.iter().filter(|f| f.format == BodyFormat::Sse) {
        let lf = String::from_utf8(fixture.body.to_vec())
            .unwrap()
            .replace("\r\n", "\n");
        for body in [
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
            format!("\u{FEFF}{lf}"),
        ] {
            let seen = track(
                UsageTracker::new(BodyFormat::Sse),
                body.as_bytes().chunks(7),
            );
            assert_eq!(seen.usage, fixture.usage, "{}", fixture.name);
            assert_eq!(seen.error.as_deref(), fixture.error, "{}", fixture.name);
        }
    }
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_result(
        index in 0..FIXTURES.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let fixture = &FIXTURES[index];
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(fixture.body.len() + 1)).collect();
        let seen = track(UsageTracker::new(fixture.format), split(fixture.body, &cuts));
        prop_assert_eq!(seen, whole(fixture.format, fixture.body));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(0..2048usize, 0..8),
        sse in any::<bool>(),
    ) {
        let format = if sse { BodyFormat::Sse } else { BodyFormat::Json };
        let seen = track(UsageTracker::new(format), split(&body, &cuts));
        prop_assert_eq!(seen, whole(format, &body));
    }

    #[test]
    fn mangled_fixtures_never_panic(
        index in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let fixture = &FIXTURES[index];
        let mut body = fixture.body.to_vec();
        for (at, byte) in edits {
            let at = at.index(body.len());
            body[at] = byte;
        }
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
        let seen = track(UsageTracker::new(fixture.format), split(&body, &cuts));
        prop_assert_eq!(seen, whole(fixture.format, &body));
    }
}

#[test]
fn keys_in_strings_and_null_values_are_not_usage() {
    // The real usage comes first: a decoy taken for usage would overwrite it.
    let body = br#"{"usage" : {"note":"}{\"usage\":{","prompt_tokens":7,"completion_tokens":1},
        "a":"usage","b":["usage", "\"usage\": {\"prompt_tokens\": 5}"],"usage":null,
        "x\"usage":{"prompt_tokens":6},"c\\":"usage","d":{"usage":"usage"}}"#;
    for chunk_len in [1, 2, 3, 5, body.len()] {
        let seen = track(UsageTracker::new(BodyFormat::Json), body.chunks(chunk_len));
        assert_eq!(seen.usage, usage(7, 1, 0, 0), "chunks of {chunk_len}");
    }
}

#[test]
fn usage_metadata_key_split_anywhere() {
    let body = br#"{"usageMetadataX":{"promptTokenCount":1},"usageMetadata":
        {"promptTokenCount":3,"candidatesTokenCount":4}}"#;
    for cut in 0..=body.len() {
        let seen = track(
            UsageTracker::new(BodyFormat::Json),
            [&body[..cut], &body[cut..]],
        );
        assert_eq!(seen.usage, usage(3, 4, 0, 0), "cut at {cut}");
    }
}

#[test]
fn oversize_usage_object_is_abandoned_and_skipped() {
    let padding = "x".repeat(MAX_USAGE_OBJECT_BYTES);
    let body = format!(
        r#"{{"usage":{{"prompt_tokens":1,"pad":"{padding}","inner":{{"usage":{{"prompt_tokens":2}}}}}},"more":{{"usage":{{"prompt_tokens":3}}}}}}"#
    );
    for chunk_len in [1000, body.len()] {
        let mut tracker = UsageTracker::new(BodyFormat::Json);
        for chunk in body.as_bytes().chunks(chunk_len) {
            tracker.feed(chunk);
            assert!(tracker.buffered_bytes() <= 2 * MAX_USAGE_OBJECT_BYTES);
        }
        assert_eq!(tracker.usage(), usage(3, 0, 0, 0));
    }
}

#[test]
fn anthropic_last_value_wins_field_by_field() {
    let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":12,\"output_tokens\":9,\"cache_read_input_tokens\":null}}\n\n";
    assert_eq!(whole(BodyFormat::Sse, stream).usage, usage(17, 9, 5, 0));
}

#[test]
fn only_the_first_error_event_is_kept_and_it_is_bounded() {
    let big = format!(
        "{{\"error\":{{\"message\":\"{}\"}}}}",
        "x".repeat(2 * MAX_ERROR_EVENT_BYTES)
    );
    let stream = format!("data: {big}\n\nevent: error\ndata: second\n\n");
    let seen = whole(BodyFormat::Sse, stream.as_bytes());
    assert_eq!(
        seen.error.as_deref(),
        Some(&big.as_bytes()[..MAX_ERROR_EVENT_BYTES])
    );
    // `event: error` counts whatever its data; `"error": null` and a nested error do not.
    let seen = whole(BodyFormat::Sse, b"data: {\"error\":null}\n\ndata: {\"response\":{\"error\":{}}}\n\nevent: error\ndata: gone\n\n");
    assert_eq!(seen.error.as_deref(), Some(&b"gone"[..]));
    // An error body that is not streamed is not an error event.
    assert_eq!(whole(BodyFormat::Json, OVERLOADED).error, None);
}

fn embeddings(vectors: usize, usage: &str) -> Vec<u8> {
    let vector = format!("[{}]", vec!["-0.006929283495992422"; 1536].join(","));
    let mut body = String::from("{\"object\":\"list\",\"data\":[");
    for index in 0..vectors {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"object\":\"embedding\",\"index\":{index},\"embedding\":{vector}}}"
        ));
    }
    body.push_str(&format!("],\"model\":\"text-embedding-3-small\"{usage}}}"));
    body.into_bytes()
}

#[test]
fn large_json_body_is_not_buffered() {
    for (tail, expected) in [
        (
            ",\"usage\":{\"prompt_tokens\":4096,\"total_tokens\":4096}",
            usage(4096, 0, 0, 0),
        ),
        ("", None),
    ] {
        let body = embeddings(160, tail);
        assert!(body.len() > 5_000_000);
        let mut tracker = UsageTracker::new(BodyFormat::Json);
        for chunk in body.chunks(16 * 1024) {
            tracker.feed(chunk);
            assert!(
                tracker.buffered_bytes() <= 1024,
                "{}",
                tracker.buffered_bytes()
            );
        }
        tracker.finish();
        assert_eq!(tracker.usage(), expected);
        assert_eq!(tracker.bytes_seen(), body.len() as u64);
    }
}

#[test]
fn long_event_stream_stays_bounded() {
    let event = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello, world\"}}\n\n";
    let mut tracker = UsageTracker::new(BodyFormat::Sse);
    let mut fed = 0;
    while fed < 5_000_000 {
        // Odd-sized chunks so events straddle them.
        for chunk in event.chunks(37) {
            tracker.feed(chunk);
        }
        fed += event.len();
        assert!(
            tracker.buffered_bytes() <= 1024,
            "{}",
            tracker.buffered_bytes()
        );
    }
    assert_eq!(tracker.usage(), None);
}

#[test]
fn oversize_event_is_dropped_without_being_held() {
    let mut tracker = UsageTracker::new(BodyFormat::Sse).with_max_event_bytes(64 * 1024);
    tracker.feed(b"data: {\"usage\":{\"prompt_tokens\":1,\"pad\":\"");
    for _ in 0..100 {
        tracker.feed(&[b'x'; 10_000]);
        assert!(
            tracker.buffered_bytes() <= 128 * 1024,
            "{}",
            tracker.buffered_bytes()
        );
    }
    tracker.feed(b"\"}}\n\ndata: {\"usage\":{\"prompt_tokens\":2}}\n\n");
    tracker.finish();
    assert_eq!(tracker.usage(), usage(2, 0, 0, 0));
}

#[test]
fn body_format_from_content_type() {
    let format = |value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        BodyFormat::from_content_type(&headers)
    };
    assert_eq!(format("text/event-stream"), BodyFormat::Sse);
    assert_eq!(format("Text/Event-Stream ; charset=utf-8"), BodyFormat::Sse);
    assert_eq!(format("application/json"), BodyFormat::Json);
    assert_eq!(format("text/event-streamed"), BodyFormat::Json);
    assert_eq!(
        BodyFormat::from_content_type(&HeaderMap::new()),
        BodyFormat::Json
    );
}
