use super::*;

/// An owned copy of an event, to compare.
#[derive(Debug, PartialEq, Eq)]
struct Owned {
    event: String,
    data: Vec<u8>,
    id: Option<String>,
    retry: Option<u64>,
}

fn owned(event: &SseEvent<'_>) -> Owned {
    Owned {
        event: event.event.to_owned(),
        data: event.data.to_vec(),
        id: event.id.map(str::to_owned),
        retry: event.retry,
    }
}

fn ev(event: &str, data: &str) -> Owned {
    Owned {
        event: event.to_owned(),
        data: data.as_bytes().to_vec(),
        id: None,
        retry: None,
    }
}

/// Parses `chunks` with `parser`; returns the events and what `finish` said.
fn run(mut parser: SseParser, chunks: &[&[u8]]) -> (Vec<Owned>, bool) {
    let mut events = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, |event| events.push(owned(event)));
    }
    (events, parser.finish())
}

fn parse(input: &[u8]) -> (Vec<Owned>, bool) {
    run(SseParser::new(), &[input])
}

#[test]
fn every_line_ending_style() {
    for input in [
        &b"data: a\n\ndata: b\n\n"[..],
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\rdata: b\r\r",
        b"data: a\r\n\ndata: b\n\r\n",
    ] {
        assert_eq!(
            parse(input),
            (vec![ev("message", "a"), ev("message", "b")], true)
        );
    }
}

#[test]
fn crlf_split_across_chunks() {
    let expected = vec![ev("message", "a"), ev("message", "b")];
    assert_eq!(
        run(
            SseParser::new(),
            &[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]
        )
        .0,
        expected
    );
    // An empty chunk between the `\r` and the `\n` changes nothing.
    assert_eq!(
        run(
            SseParser::new(),
            &[b"data: a\r", b"", b"\n\r", b"", b"\ndata: b\r\n\r\n"]
        )
        .0,
        expected
    );
    // A lone `\r` at the end of a chunk followed by another line: two line ends, not one.
    assert_eq!(
        run(SseParser::new(), &[b"data: a\r", b"\rdata: b\n\n"]).0,
        expected
    );
}

#[test]
fn byte_order_mark_is_skipped_only_at_the_start() {
    assert_eq!(
        parse(b"\xEF\xBB\xBFdata: a\n\n").0,
        vec![ev("message", "a")]
    );
    assert_eq!(
        run(SseParser::new(), &[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]).0,
        vec![ev("message", "a")]
    );
    // A second mark is part of the field name, which is then unknown.
    assert_eq!(
        parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n").0,
        vec![ev("message", "b")]
    );
    // A cut-short mark is not a mark.
    assert_eq!(parse(b"\xEF\xBBdata: a\n\n").0, vec![]);
    assert_eq!(run(SseParser::new(), &[b"\xEF", b"\xBB"]), (vec![], false));
}

#[test]
fn comments_are_ignored() {
    let (events, clean) = parse(b": keep-alive\n\n:\ndata: a\n: inside\ndata: b\n\n");
    assert_eq!(events, vec![ev("message", "a\nb")]);
    assert!(clean);
}

#[test]
fn data_lines_are_joined_with_newlines() {
    assert_eq!(
        parse(b"data: a\ndata:\ndata:  b\n\n").0,
        vec![ev("message", "a\n\n b")]
    );
    // `data` alone is a field with an empty value: the event is dispatched with empty data.
    assert_eq!(parse(b"data\n\n").0, vec![ev("message", "")]);
    assert_eq!(parse(b"data\ndata\n\n").0, vec![ev("message", "\n")]);
}

#[test]
fn only_one_space_after_the_colon_is_stripped() {
    assert_eq!(parse(b"data:a\n\n").0, vec![ev("message", "a")]);
    assert_eq!(parse(b"data:  a \n\n").0, vec![ev("message", " a ")]);
    assert_eq!(parse(b"event:x\ndata:a:b\n\n").0, vec![ev("x", "a:b")]);
    assert_eq!(parse(b"data:\ta\n\n").0, vec![ev("message", "\ta")]);
}

#[test]
fn event_type_resets_after_each_event() {
    let (events, _) = parse(b"event: delta\ndata: 1\n\ndata: 2\n\nevent: a\nevent: b\ndata: 3\n\n");
    assert_eq!(
        events,
        vec![ev("delta", "1"), ev("message", "2"), ev("b", "3")]
    );
}

#[test]
fn event_without_data_is_not_dispatched() {
    let (events, clean) = parse(b"event: ping\n\nid: 1\n\nretry: 5\n\nevent: x\ndata: y\n\n");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].event, "x",
        "the type of an undispatched event must not leak"
    );
    assert!(clean);
}

#[test]
fn id_and_retry_persist_like_the_spec_says() {
    let (events, _) = parse(b"id: 7\nretry: 1500\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: a\0b\nretry: x1\ndata: d\n\n");
    let ids: Vec<_> = events.iter().map(|event| event.id.as_deref()).collect();
    assert_eq!(ids, [Some("7"), Some("7"), None, None]);
    assert!(events.iter().all(|event| event.retry == Some(1500)));
    assert_eq!(
        parse(b"retry: 99999999999999999999999\ndata: a\n\n").0[0].retry,
        None
    );
}

#[test]
fn unknown_fields_and_bad_utf8_do_not_panic() {
    let (events, _) = parse(b"foo: bar\n\xFF\xFE: x\nevent: \xFFx\nid: \xC3\ndata: \xFF\n\n");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "\u{FFFD}x");
    assert_eq!(events[0].id.as_deref(), Some("\u{FFFD}"));
    assert_eq!(events[0].data, b"\xFF");
}

#[test]
fn over_cap_event_is_dropped_and_the_next_one_kept() {
    let input = b"data: small\n\ndata: 0123456789\ndata: 0123456789\n: x\n\ndata: next\n\n";
    let mut parser = SseParser::new().with_max_event_bytes(24);
    let mut events = Vec::new();
    parser.feed(input, |event| events.push(owned(event)));
    assert!(parser.finish());
    assert_eq!(events, vec![ev("message", "small"), ev("message", "next")]);
    assert_eq!(parser.dropped_events(), 1);
}

#[test]
fn over_cap_line_is_never_buffered() {
    let mut parser = SseParser::new().with_max_event_bytes(1024);
    let mut events = Vec::new();
    parser.feed(b"data: ", |event| events.push(owned(event)));
    for _ in 0..1000 {
        parser.feed(&[b'x'; 1000], |event| events.push(owned(event)));
        assert!(
            parser.buffered_bytes() <= 2048,
            "{}",
            parser.buffered_bytes()
        );
    }
    parser.feed(b"\ndata: more\n\ndata: ok\n\n", |event| {
        events.push(owned(event))
    });
    assert_eq!(events, vec![ev("message", "ok")]);
    assert_eq!(parser.dropped_events(), 1);
    assert!(parser.finish());
}

#[test]
fn finish_mid_event() {
    assert_eq!(
        parse(b"data: a\n\ndata: b\n"),
        (vec![ev("message", "a")], false)
    );
    assert_eq!(
        parse(b"data: a\n\ndata: b"),
        (vec![ev("message", "a")], false)
    );
    assert_eq!(
        parse(b"data: a\n\nevent: x\n"),
        (vec![ev("message", "a")], false)
    );
    assert_eq!(
        parse(b"data: a\n\n: comment\n"),
        (vec![ev("message", "a")], true)
    );
    assert_eq!(parse(b""), (vec![], true));
    let mut parser = SseParser::new().with_max_event_bytes(4);
    parser.feed(b"data: too long\n", |_| panic!("dropped"));
    assert!(
        !parser.finish(),
        "a dropped event cut short is still mid-event"
    );
}

#[test]
fn finish_resets_for_a_new_stream() {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.feed(b"id: 1\ndata: cut", |event| events.push(owned(event)));
    assert!(!parser.finish());
    parser.feed(b"\xEF\xBB\xBFdata: fresh\n\n", |event| {
        events.push(owned(event))
    });
    assert!(parser.finish());
    assert_eq!(events, vec![ev("message", "fresh")]);
}

#[test]
fn data_spanning_chunks_is_joined() {
    let chunks: [&[u8]; 5] = [
        b"event: delta\nda",
        b"ta: {\"a\":",
        b"1}\ndata: x",
        b"\n",
        b"\ndata: y\n\n",
    ];
    let (events, clean) = run(SseParser::new(), &chunks);
    assert_eq!(
        events,
        vec![ev("delta", "{\"a\":1}\nx"), ev("message", "y")]
    );
    assert!(clean);
}
