//! The call a flight makes: the second level, else upstream; the answer published to the
//! waiters as it arrives, and stored when it ended cleanly.
//!
//! The body is read one frame at a time, each only when the flight has room for it (see
//! [`crate::flight`]): past `max_entry_bytes` the flight records no more, leaves the map of
//! calls that identical requests can join, and the call reads on at the pace of the slowest
//! waiter.
//!
//! An answer is stored when it is a 2xx (and its [`Outcome`], if a
//! [`ClassifyLayer`](tollgate_core::classify::ClassifyLayer) below set one, a success), its body
//! was read to the end without an error, no error event came in the stream (an `event: error`,
//! or an event whose JSON has a top-level `error`: whether or not an
//! [`EndOfStream`] below reported one), an event stream ended on an event boundary, and it
//! fits in `max_entry_bytes`.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use http::response::Parts;
use http::{Extensions, HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tollgate_core::body::{EndOfStream, EndReason};
use tollgate_core::usage::{BodyFormat, SseEvent, SseParser};
use tollgate_core::{BoxError, Outcome};
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::entry::{Entry, Recorded};
use crate::error::CallLost;
use crate::flight::Flight;
use crate::key::CacheKey;
use crate::layer::{Core, Settings};
use crate::stats::bump;

/// What a miss asks of its flight.
pub(crate) struct Call {
    pub(crate) key: CacheKey,
    /// Whether the request asked for a stream (its frames are then kept as they came).
    pub(crate) streamed: bool,
    /// `cache-control: no-cache`: upstream even when the second level has it.
    pub(crate) refresh: bool,
}

impl Call {
    /// Starts the call on its own task.
    pub(crate) fn spawn<S, RB>(
        self,
        flight: Arc<Flight>,
        core: Arc<Core>,
        settings: Arc<Settings>,
        inner: S,
        request: Request<Full<Bytes>>,
    ) -> AbortHandle
    where
        S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let run = Running {
            call: self,
            flight,
            core,
            settings,
            done: false,
        };
        // The call belongs to the request that started it: its span goes along.
        let call = run.run(inner, request).instrument(tracing::Span::current());
        tokio::spawn(call).abort_handle()
    }
}

/// A call under way; if it is dropped before its end (aborted, or the inner service
/// panicked), its waiters are told.
struct Running {
    call: Call,
    flight: Arc<Flight>,
    core: Arc<Core>,
    settings: Arc<Settings>,
    done: bool,
}

impl Running {
    async fn run<S, RB>(mut self, inner: S, request: Request<Full<Bytes>>)
    where
        S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        RB: Body<Data = Bytes>,
        RB::Error: Into<BoxError>,
    {
        #[cfg(feature = "redis")]
        if !self.call.refresh
            && let Some(level) = self.settings.second_level.clone()
            && let Some(entry) = level
                .get(&self.call.key, &self.core.config, self.settings.marker())
                .await
        {
            bump(&self.core.store.counters.second_level_hits);
            return self.serve(Arc::new(entry)).await;
        }
        let response = match inner.oneshot(request).await {
            Ok(response) => response,
            Err(error) => return self.fail(error.into()),
        };
        let (head, body) = response.into_parts();
        let mut check = Check::new(&head, self.core.store.max_entry_bytes());
        self.flight.head(head.clone(), false);
        let mut body = pin!(body);
        loop {
            poll_fn(|cx| self.flight.poll_room(cx)).await;
            let Some(frame) = body.frame().await else {
                break;
            };
            match frame.map(Frame::into_data) {
                Ok(Ok(data)) => {
                    check.data(&data);
                    self.publish(data);
                }
                Ok(Err(other)) => {
                    if let Ok(trailers) = other.into_trailers() {
                        self.flight.trailers(trailers);
                    }
                }
                Err(error) => {
                    bump(&self.core.store.counters.not_stored);
                    return self.fail(error.into());
                }
            }
        }
        let stored = match self.flight.recorded() {
            Some(recorded) if check.passed(&head.extensions) => self.store(head, recorded),
            _ => {
                bump(&self.core.store.counters.not_stored);
                None
            }
        };
        self.complete();
        #[cfg(feature = "redis")]
        if let (Some(entry), Some(level)) = (stored, &self.settings.second_level) {
            let config = &self.core.config;
            level
                .put(&self.call.key, &entry, config, self.settings.marker())
                .await;
        }
        #[cfg(not(feature = "redis"))]
        drop(stored);
    }

    /// Publishes a body frame; once the answer is too large to store, identical requests no
    /// longer find the flight.
    fn publish(&self, data: Bytes) {
        if self.flight.data(data) {
            self.core.flights.remove(&self.call.key, &self.flight);
        }
    }

    /// Stores the answer read to its end (its frames and trailers); the entry, when it was.
    fn store(
        &self,
        head: Parts,
        (frames, trailers): (Vec<Bytes>, Option<HeaderMap>),
    ) -> Option<Arc<Entry>> {
        let is_sse = BodyFormat::from_content_type(&head.headers) == BodyFormat::Sse;
        let recorded = Recorded {
            status: head.status,
            headers: head.headers,
            frames,
            trailers,
            streamed: self.call.streamed || is_sse,
        };
        let now = Instant::now();
        let entry = Arc::new(Entry::new(recorded, now, now, self.settings.marker()));
        let stored = self.core.store.insert(self.call.key, entry.clone());
        stored.then_some(entry)
    }

    /// Answers every waiter with `entry` (from the second level), and keeps it in memory.
    #[cfg(feature = "redis")]
    async fn serve(mut self, entry: Arc<Entry>) {
        self.core.store.insert(self.call.key, entry.clone());
        let mut head = Response::new(()).into_parts().0;
        head.status = entry.status;
        head.headers = entry.headers.clone();
        self.flight.head(head, true);
        for frame in &entry.frames {
            poll_fn(|cx| self.flight.poll_room(cx)).await;
            self.publish(frame.clone());
        }
        if let Some(trailers) = &entry.trailers {
            self.flight.trailers(trailers.clone());
        }
        self.complete();
    }

    /// The body ended: later requests find the answer stored, not the flight.
    fn complete(&mut self) {
        self.done = true;
        self.core.flights.remove(&self.call.key, &self.flight);
        self.flight.complete();
    }

    fn fail(mut self, error: BoxError) {
        self.done = true;
        self.core.flights.remove(&self.call.key, &self.flight);
        self.flight.fail(error);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            self.core.flights.remove(&self.call.key, &self.flight);
            self.flight.fail(Box::new(CallLost));
        }
    }
}

type Frame = http_body::Frame<Bytes>;

/// Decides, as the body passes, whether the answer may be stored.
struct Check {
    storable: bool,
    bytes: u64,
    max_bytes: u64,
    /// Parses an event stream for error events.
    events: Option<SseParser>,
    error_event: bool,
}

impl Check {
    fn new(head: &Parts, max_bytes: u64) -> Self {
        let outcome = head.extensions.get::<Outcome>();
        let storable = head.status.is_success() && outcome.is_none_or(Outcome::is_success);
        let is_sse = BodyFormat::from_content_type(&head.headers) == BodyFormat::Sse;
        Self {
            storable,
            bytes: 0,
            max_bytes,
            events: (storable && is_sse).then(SseParser::new),
            error_event: false,
        }
    }

    fn data(&mut self, data: &[u8]) {
        if !self.storable {
            return;
        }
        self.bytes += data.len() as u64;
        if self.bytes > self.max_bytes {
            self.storable = false;
            self.events = None;
            return;
        }
        if let Some(parser) = &mut self.events {
            let error_event = &mut self.error_event;
            parser.feed(data, |event| *error_event |= is_error(event));
        }
    }

    /// Whether the answer, read to its end, may be stored.
    fn passed(mut self, extensions: &Extensions) -> bool {
        let whole_events = self.events.as_mut().is_none_or(SseParser::finish);
        let observed = extensions.get::<EndOfStream>().and_then(EndOfStream::ended);
        let observed_clean =
            observed.is_none_or(|end| end.reason == EndReason::Complete && end.error.is_none());
        self.storable && whole_events && !self.error_event && observed_clean
    }
}

/// Anthropic's `event: error`, or OpenAI's `data: {"error": ...}`.
fn is_error(event: &SseEvent<'_>) -> bool {
    if event.event == "error" {
        return true;
    }
    let data = event.data;
    data.windows(7).any(|w| w == b"\"error\"")
        && serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|value| {
            value.get("error").is_some() || value.get("type").is_some_and(|t| t == "error")
        })
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, StatusCode, header};

    use super::*;

    fn sse_head(status: StatusCode) -> Parts {
        let mut head = Response::new(()).into_parts().0;
        head.status = status;
        head.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        head
    }

    fn passes(status: StatusCode, chunks: &[&[u8]], max: u64) -> bool {
        let head = sse_head(status);
        let mut check = Check::new(&head, max);
        for chunk in chunks {
            check.data(chunk);
        }
        check.passed(&head.extensions)
    }

    #[test]
    fn only_clean_successful_streams_pass() {
        let ok: &[&[u8]] = &[b"data: {\"a\":1}\n\n", b"data: [DONE]\n\n"];
        assert!(passes(StatusCode::OK, ok, 1024));
        assert!(!passes(StatusCode::TOO_MANY_REQUESTS, ok, 1024));
        assert!(!passes(StatusCode::OK, ok, 10), "too large");
        let cut: &[&[u8]] = &[b"data: {\"a\":1}\n\n", b"data: {\"a\""];
        assert!(!passes(StatusCode::OK, cut, 1024));
        let anthropic: &[&[u8]] = &[b"event: error\ndata: {\"type\":\"error\"}\n\n"];
        assert!(!passes(StatusCode::OK, anthropic, 1024));
        let openai: &[&[u8]] = &[b"data: {\"error\":{\"message\":\"x\"}}\n\n"];
        assert!(!passes(StatusCode::OK, openai, 1024));
        let quoted: &[&[u8]] = &[b"data: {\"content\":\"\\\"error\\\"\"}\n\n"];
        assert!(passes(StatusCode::OK, quoted, 1024), "a word in the text");
    }

    #[test]
    fn a_failed_outcome_does_not_pass() {
        let mut head = sse_head(StatusCode::OK);
        head.extensions
            .insert(Outcome::new(tollgate_core::OutcomeKind::ServerError));
        assert!(!Check::new(&head, 1024).passed(&head.extensions));
    }
}
