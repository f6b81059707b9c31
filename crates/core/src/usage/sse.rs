//! An incremental Server-Sent Events parser.
//!
//! Streamed LLM responses are `text/event-stream` bodies, and the network cuts them wherever it
//! likes: in the middle of a line, between the `\r` and `\n` of a line end, inside a UTF-8
//! character. [`SseParser`] follows the [WHATWG parsing rules] over any such chunking, copies
//! only what a chunk boundary forces it to keep (a partial line, an event whose lines span
//! chunks), hands out events that borrow from the chunk when they can, and holds at most
//! [`with_max_event_bytes`](SseParser::with_max_event_bytes) for any one event, so a broken or
//! hostile stream cannot grow it.
//!
//! [WHATWG parsing rules]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use std::fmt;

use self::lines::shrink;

mod lines;

const BOM: &[u8] = b"\xEF\xBB\xBF";
const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One dispatched event, borrowing from the parser or from the chunk being fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The event type: the last `event` field of the event, `"message"` when none was sent.
    pub event: &'a str,
    /// The `data` lines of the event joined with `\n`, as raw bytes (not checked to be UTF-8).
    pub data: &'a [u8],
    /// The stream's last event ID: set by an `id` field in this event or an earlier one, as the
    /// spec says; `None` while it is empty.
    pub id: Option<&'a str>,
    /// The stream's reconnection time in milliseconds, from the latest valid `retry` field.
    pub retry: Option<u64>,
}

/// An incremental `text/event-stream` parser.
///
/// Feed it the body chunk by chunk with [`feed`](Self::feed), which calls back once per
/// complete event, then call [`finish`](Self::finish) at the end of the body.
///
/// ```
/// use tollgate_core::usage::SseParser;
///
/// let mut parser = SseParser::new();
/// let mut seen = Vec::new();
/// for chunk in [&b"event: ping\r"[..], b"\ndata: {\"a\"", b":1}\n\n"] {
///     parser.feed(chunk, |event| seen.push((event.event.to_owned(), event.data.to_vec())));
/// }
/// assert!(parser.finish());
/// assert_eq!(seen, [("ping".to_owned(), b"{\"a\":1}".to_vec())]);
/// ```
///
/// # Limits
///
/// An event is dropped, and counted in [`dropped_events`](Self::dropped_events), as soon as its
/// data so far plus the line being read exceed the cap; the rest of it is skipped up to the blank
/// line that ends it, without being buffered. Field names and values that are not UTF-8 are
/// decoded lossily (`data` is passed on as bytes); nothing the stream contains can panic.
pub struct SseParser {
    max_event_bytes: usize,
    /// A line cut by the end of a chunk.
    line: Vec<u8>,
    /// The current event's data, once it no longer fits in one range of the chunk being fed.
    data: Vec<u8>,
    /// The current event's data as a range of the chunk being fed (only during `feed`).
    data_in_chunk: Option<(usize, usize)>,
    has_data: bool,
    event_type: String,
    last_id: String,
    retry: Option<u64>,
    /// A field line was read since the last blank line.
    pending: bool,
    /// The last chunk ended with `\r`: a `\n` starting the next one belongs to that line end.
    skip_lf: bool,
    /// Bytes of a possible byte order mark seen at the start of the stream.
    bom_seen: usize,
    started: bool,
    /// The rest of the current line belongs to a dropped event.
    skipping_line: bool,
    /// The current event was dropped: skip to the next blank line.
    skipping_event: bool,
    dropped: u64,
}

impl SseParser {
    /// A parser that holds at most 16 MiB for one event.
    pub fn new() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            line: Vec::new(),
            data: Vec::new(),
            data_in_chunk: None,
            has_data: false,
            event_type: String::new(),
            last_id: String::new(),
            retry: None,
            pending: false,
            skip_lf: false,
            bom_seen: 0,
            started: false,
            skipping_line: false,
            skipping_event: false,
            dropped: 0,
        }
    }

    /// Sets the most bytes one event may take (its joined data plus the line being read);
    /// a larger event is dropped.
    pub fn with_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.max_event_bytes = max_event_bytes;
        self
    }

    /// Parses the next chunk of the stream, calling `on_event` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&SseEvent<'_>)) {
        let mut rest = chunk;
        // The byte order mark may itself be cut by a chunk boundary.
        while !self.started {
            let Some((&byte, tail)) = rest.split_first() else {
                return;
            };
            if byte == BOM[self.bom_seen] {
                self.bom_seen += 1;
                self.started = self.bom_seen == BOM.len();
                rest = tail;
            } else {
                self.started = true;
                self.feed_lines(&BOM[..self.bom_seen], &mut on_event);
            }
        }
        self.feed_lines(rest, &mut on_event);
    }

    /// Ends the stream: an incomplete last event is discarded, as the spec says.
    ///
    /// Returns `true` when the stream ended cleanly, on a line end with no field read since the
    /// last blank line; `false` when it ended mid-event (or mid-line). The parser is then ready
    /// for a new stream; [`dropped_events`](Self::dropped_events) keeps counting.
    pub fn finish(&mut self) -> bool {
        if !self.started {
            self.started = true;
            self.feed_lines(&BOM[..self.bom_seen], &mut |_: &SseEvent<'_>| {});
        }
        let clean =
            self.line.is_empty() && !self.pending && !self.skipping_line && !self.skipping_event;
        self.line.clear();
        shrink(&mut self.line);
        self.reset_event();
        self.last_id.clear();
        self.retry = None;
        self.skip_lf = false;
        self.bom_seen = 0;
        self.started = false;
        self.skipping_line = false;
        self.skipping_event = false;
        clean
    }

    /// How many events were dropped for exceeding the size cap.
    pub fn dropped_events(&self) -> u64 {
        self.dropped
    }

    /// The heap memory the parser currently holds, in bytes (the capacity of its buffers).
    #[doc(hidden)]
    pub fn buffered_bytes(&self) -> usize {
        self.line.capacity()
            + self.data.capacity()
            + self.event_type.capacity()
            + self.last_id.capacity()
    }
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SseParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseParser")
            .field("max_event_bytes", &self.max_event_bytes)
            .field("buffered_bytes", &self.buffered_bytes())
            .field("event_type", &self.event_type)
            .field("last_id", &self.last_id)
            .field("retry", &self.retry)
            .field("dropped_events", &self.dropped)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
