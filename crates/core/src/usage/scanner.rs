//! Reading usage, and a late error event, from a response body as it streams past.

use std::fmt;
use std::sync::LazyLock;

use http::HeaderMap;
use http::header::CONTENT_TYPE;
use memchr::memmem::Finder;

use super::Usage;
use super::fields::{self, Counts};
use super::json::UsageObjectScanner;
use super::sse::{SseEvent, SseParser};

/// The most of an error event's data kept; a longer one is cut.
pub(crate) const MAX_ERROR_EVENT_BYTES: usize = 64 * 1024;

/// Events without either of these cannot carry usage or an error: they are not parsed.
static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage"));
static ERROR_WORD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));

/// How a response body is framed, which decides how usage is found in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyFormat {
    /// One JSON document (a non-streamed completion, embeddings, an error body).
    Json,
    /// A `text/event-stream` of events (a streamed completion).
    Sse,
}

impl BodyFormat {
    /// [`Sse`](Self::Sse) when the `content-type` is `text/event-stream` (parameters and case
    /// aside), [`Json`](Self::Json) otherwise, a missing header included.
    pub fn from_content_type(headers: &HeaderMap) -> Self {
        let is_sse = headers.get(CONTENT_TYPE).is_some_and(|value| {
            let bytes = value.as_bytes();
            let essence = bytes.split(|&b| b == b';').next().unwrap_or(bytes);
            essence
                .trim_ascii()
                .eq_ignore_ascii_case(b"text/event-stream")
        });
        if is_sse { Self::Sse } else { Self::Json }
    }
}

#[derive(Debug)]
enum Scanner {
    Json(UsageObjectScanner),
    Sse(SseParser),
}

/// Finds the provider's token usage in a response body fed chunk by chunk, whatever the
/// chunking, and, in an event stream, the first error event (Anthropic's `event: error` after a
/// 200, OpenAI's `data: {"error": ...}`).
///
/// Memory stays bounded whatever the body: a JSON body is never buffered (only a usage object,
/// up to 16 KiB), an event stream holds at most one event (16 MiB, the [`SseParser`] default),
/// the error event at most 64 KiB.
///
/// When usage appears several times, each count takes the last value seen: Anthropic's input
/// counts come from `message_start` and the output from the final `message_delta`; Gemini's
/// chunks are cumulative, so the last one is the total.
pub(crate) struct UsageTracker {
    scanner: Scanner,
    counts: Counts,
    error_event: Option<Vec<u8>>,
    bytes_seen: u64,
}

impl UsageTracker {
    /// A tracker for a body framed as `format`.
    pub(crate) fn new(format: BodyFormat) -> Self {
        let scanner = match format {
            BodyFormat::Json => Scanner::Json(UsageObjectScanner::new()),
            BodyFormat::Sse => Scanner::Sse(SseParser::new()),
        };
        Self {
            scanner,
            counts: Counts::default(),
            error_event: None,
            bytes_seen: 0,
        }
    }

    /// The same tracker with a smaller event cap, to test the cap without 16 MiB events.
    #[cfg(test)]
    pub(crate) fn with_max_event_bytes(mut self, max: usize) -> Self {
        if let Scanner::Sse(parser) = self.scanner {
            self.scanner = Scanner::Sse(parser.with_max_event_bytes(max));
        }
        self
    }

    /// Scans the next chunk of the body.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.bytes_seen = self.bytes_seen.saturating_add(chunk.len() as u64);
        let Self {
            scanner,
            counts,
            error_event,
            ..
        } = self;
        match scanner {
            Scanner::Json(objects) => objects.feed(chunk, |object| {
                if let Some(found) = fields::parse_usage_object(object) {
                    counts.merge(&found);
                }
            }),
            Scanner::Sse(parser) => parser.feed(chunk, |event| {
                on_event(event, counts, error_event);
            }),
        }
    }

    /// The body ended (an incomplete last event is discarded).
    pub(crate) fn finish(&mut self) {
        if let Scanner::Sse(parser) = &mut self.scanner {
            parser.finish();
        }
    }

    /// The usage seen so far, `None` when the body carried none.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.counts.usage()
    }

    /// The data of the first error event of an event stream, cut to 64 KiB.
    pub(crate) fn error_event(&self) -> Option<&[u8]> {
        self.error_event.as_deref()
    }

    /// How many body bytes were fed.
    pub(crate) fn bytes_seen(&self) -> u64 {
        self.bytes_seen
    }

    /// The heap memory held, in bytes, to check that it stays bounded.
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        let scanner = match &self.scanner {
            Scanner::Json(objects) => objects.buffered_bytes(),
            Scanner::Sse(parser) => parser.buffered_bytes(),
        };
        scanner + self.error_event.as_ref().map_or(0, Vec::capacity)
    }
}

fn on_event(event: &SseEvent<'_>, counts: &mut Counts, error_event: &mut Option<Vec<u8>>) {
    let data = event.data;
    if data == b"[DONE]" {
        return;
    }
    let mut is_error = event.event == "error";
    let maybe_usage = USAGE_KEY.find(data).is_some();
    let maybe_error = !is_error && error_event.is_none() && ERROR_WORD.find(data).is_some();
    if (maybe_usage || maybe_error)
        && let Some(facts) = fields::parse_event(data)
    {
        is_error |= facts.is_error;
        for found in facts.usage.iter().flatten() {
            counts.merge(found);
        }
    }
    if is_error && error_event.is_none() {
        let kept = &data[..data.len().min(MAX_ERROR_EVENT_BYTES)];
        *error_event = Some(kept.to_vec());
    }
}

impl fmt::Debug for UsageTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageTracker")
            .field("scanner", &self.scanner)
            .field("usage", &self.usage())
            .field("error_event", &self.error_event.as_ref().map(Vec::len))
            .field("bytes_seen", &self.bytes_seen)
            .finish()
    }
}

#[cfg(test)]
mod tests;
