//! End of stream: acting when a response body ends, not when its headers arrive.
//!
//! An LLM response is often a stream that lasts minutes. A concurrency permit must be held
//! until its last byte, the token reservation reconciled from the usage in its last event, and
//! an `event: error` that arrives after a 200 counted as the failure it is. [`ObservedBody`]
//! wraps the body once (the [`ClassifyLayer`](crate::classify::ClassifyLayer) does it), reads
//! usage and error events as the bytes pass without buffering them, and when the body ends —
//! completely, with an error, or by being dropped — runs every hook registered through the
//! [`EndOfStream`] handle found in the response extensions, exactly once.
//!
//! ```
//! use tollgate_core::body::{EndOfStream, EndReason};
//!
//! # fn on_response<B>(response: &http::Response<B>) {
//! if let Some(end) = response.extensions().get::<EndOfStream>() {
//!     end.on_end(|end| {
//!         if end.reason == EndReason::Complete {
//!             println!("used {:?}", end.usage);
//!         }
//!     });
//! }
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::classify::{classify_error, classify_stream_error, is_deadline_expiry};
use crate::usage::{BodyFormat, UsageTracker};
use crate::{BoxError, Outcome, Usage};

/// How a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The last byte was read.
    Complete,
    /// Reading the body failed (a disconnect, a timeout between chunks).
    Failed,
    /// The body was dropped before its end: the caller lost interest, was cancelled, or its
    /// own [`Deadline`](crate::Deadline) ran out. None of these says anything about the
    /// upstream, so the breaker and the adaptive limit leave them out.
    Dropped,
}

/// What a body said by the time it ended; handed to every [`EndOfStream`] hook.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamEnd {
    /// How it ended.
    pub reason: EndReason,
    /// The token usage the provider reported in the body, if it did.
    pub usage: Option<Usage>,
    /// A failure inside the body: an `event: error` after a 200, or the error that broke the
    /// read. `None` for a clean end.
    pub error: Option<Outcome>,
    /// Body bytes read.
    pub bytes: u64,
}

type Hook = Box<dyn FnOnce(&StreamEnd) + Send>;

enum HookState {
    // `failure`: set by `EndOfStream::fail`, reported if the body is then dropped.
    Waiting {
        hooks: Vec<Hook>,
        failure: Option<Outcome>,
    },
    Ended(StreamEnd),
}

/// The handle, found in the response extensions, for acting when the body ends.
///
/// # Clone
///
/// Clones share one registry: a hook added through any clone runs once, when the body ends.
#[derive(Clone)]
pub struct EndOfStream {
    state: Arc<Mutex<HookState>>,
}

impl EndOfStream {
    fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(HookState::Waiting {
                hooks: Vec::new(),
                failure: None,
            })),
        }
    }

    /// Runs `hook` once when the body ends (or right away, if it already has).
    ///
    /// Hooks run on the task that reads or drops the body; keep them short and non-blocking.
    pub fn on_end(&self, hook: impl FnOnce(&StreamEnd) + Send + 'static) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            HookState::Waiting { hooks, .. } => hooks.push(Box::new(hook)),
            HookState::Ended(end) => {
                let end = end.clone();
                drop(state);
                hook(&end);
            }
        }
    }

    /// How the body ended, once it has.
    pub fn ended(&self) -> Option<StreamEnd> {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            HookState::Waiting { .. } => None,
            HookState::Ended(end) => Some(end.clone()),
        }
    }

    /// Records that a layer outside the body gave up on it — a timeout between chunks, say —
    /// and is about to drop it: if the body then ends by being dropped, the hooks see
    /// [`EndReason::Failed`] with `error` instead of a caller who walked away. A body that ends
    /// any other way keeps its own report; the first failure recorded wins.
    pub fn fail(&self, error: Outcome) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let HookState::Waiting { failure, .. } = &mut *state {
            failure.get_or_insert(error);
        }
    }

    fn finish(&self, mut end: StreamEnd) {
        let hooks = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let HookState::Waiting { hooks, failure } = &mut *state else {
                // Already reported: keep the first report.
                return;
            };
            if end.reason == EndReason::Dropped
                && end.error.is_none()
                && let Some(failure) = failure.take()
            {
                end.reason = EndReason::Failed;
                end.error = Some(failure);
            }
            let hooks = std::mem::take(hooks);
            *state = HookState::Ended(end.clone());
            hooks
        };
        for hook in hooks {
            hook(&end);
        }
    }
}

impl fmt::Debug for EndOfStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndOfStream")
            .field("ended", &self.ended())
            .finish()
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Direct { #[pin] body: B },
        // A body that was peeked at before the caller saw it lives in a box, so that the
        // future that peeked could hand it over.
        Peeked { body: Pin<Box<B>> },
    }
}

pin_project! {
    /// A response body that reports usage and errors to [`EndOfStream`] hooks when it ends.
    ///
    /// Bytes pass through unchanged and unbuffered; an error-body prefix that
    /// [`ClassifyLayer`](crate::classify::ClassifyLayer) peeked at is replayed first.
    pub struct ObservedBody<B: Body> {
        #[pin]
        inner: Inner<B>,
        prefix: Option<Bytes>,
        // A trailers frame or an error met while peeking, replayed after the prefix.
        deferred: Option<Box<Result<Frame<Bytes>, BoxError>>>,
        inner_done: bool,
        // Boxed (with `deferred`): a response moves through every layer above, several times
        // each, and this body is in it; inline, the tracker's few hundred bytes move with it.
        tracker: Box<UsageTracker>,
        end: Option<EndOfStream>,
    }

    impl<B: Body> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(end) = this.end.take() {
                let complete = this.prefix.is_none()
                    && this.deferred.is_none()
                    && (*this.inner_done || this.inner.is_end_stream());
                let reason = if complete { EndReason::Complete } else { EndReason::Dropped };
                report(end, this.tracker, reason, None);
            }
        }
    }
}

fn report(
    end: EndOfStream,
    tracker: &mut UsageTracker,
    reason: EndReason,
    failure: Option<Outcome>,
) {
    if reason == EndReason::Complete {
        tracker.finish();
    }
    let error = failure.or_else(|| tracker.error_event().map(classify_stream_error));
    end.finish(StreamEnd {
        reason,
        usage: tracker.usage(),
        error,
        bytes: tracker.bytes_seen(),
    });
}

/// Where peeking at a body stopped.
pub(crate) struct PeekStop {
    /// A trailers frame or an error met while peeking, to replay after the prefix.
    pub(crate) rest: Option<Result<Frame<Bytes>, BoxError>>,
    /// Whether the body had ended.
    pub(crate) body_done: bool,
}

impl<B: Body> Inner<B> {
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Direct { body } => body.is_end_stream(),
            Self::Peeked { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Direct { body } => body.size_hint(),
            Self::Peeked { body } => body.size_hint(),
        }
    }
}

impl<B: Body<Data = Bytes>> ObservedBody<B> {
    /// Wraps `body`, reading it as SSE or JSON according to the response `headers`; returns the
    /// handle to put in the response extensions.
    pub fn new(body: B, headers: &HeaderMap) -> (Self, EndOfStream) {
        Self::build(Inner::Direct { body }, None, None, false, headers)
    }

    /// Wraps a body whose first bytes (`prefix`) were already read, up to `stop`.
    pub(crate) fn peeked(
        body: Pin<Box<B>>,
        prefix: Bytes,
        stop: PeekStop,
        headers: &HeaderMap,
    ) -> (Self, EndOfStream) {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        Self::build(
            Inner::Peeked { body },
            prefix,
            stop.rest,
            stop.body_done,
            headers,
        )
    }

    fn build(
        inner: Inner<B>,
        prefix: Option<Bytes>,
        deferred: Option<Result<Frame<Bytes>, BoxError>>,
        inner_done: bool,
        headers: &HeaderMap,
    ) -> (Self, EndOfStream) {
        let end = EndOfStream::new();
        let body = Self {
            inner,
            prefix,
            deferred: deferred.map(Box::new),
            inner_done,
            tracker: Box::new(UsageTracker::new(BodyFormat::from_content_type(headers))),
            end: Some(end.clone()),
        };
        (body, end)
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(prefix) = this.prefix.take() {
            this.tracker.feed(&prefix);
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let polled = if let Some(deferred) = this.deferred.take() {
            Some(*deferred)
        } else if *this.inner_done {
            None
        } else {
            let polled = match this.inner.as_mut().project() {
                InnerProj::Direct { body } => ready!(body.poll_frame(cx)),
                InnerProj::Peeked { body } => ready!(body.as_mut().poll_frame(cx)),
            };
            polled.map(|frame| frame.map_err(Into::into))
        };
        match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.tracker.feed(data);
                }
                // A caller may stop polling once `is_end_stream` says so (hyper does): report now.
                if this.deferred.is_none() && this.inner.is_end_stream() {
                    *this.inner_done = true;
                    if let Some(end) = this.end.take() {
                        report(end, this.tracker, EndReason::Complete, None);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                *this.inner_done = true;
                if let Some(end) = this.end.take() {
                    if is_deadline_expiry(&*error) {
                        // The caller's own deadline (a timeout layer below gave up for it).
                        report(end, this.tracker, EndReason::Dropped, None);
                    } else {
                        let failure = classify_error(&*error);
                        report(end, this.tracker, EndReason::Failed, Some(failure));
                    }
                }
                Poll::Ready(Some(Err(error)))
            }
            None => {
                *this.inner_done = true;
                if let Some(end) = this.end.take() {
                    report(end, this.tracker, EndReason::Complete, None);
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.deferred.is_none()
            && (self.inner_done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        if self.inner_done {
            return SizeHint::with_exact(buffered);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(buffered));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

impl<B: Body> fmt::Debug for ObservedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedBody")
            .field("tracker", &self.tracker)
            .field("ended", &self.end.is_none())
            .finish_non_exhaustive()
    }
}

/// The bytes of a buffered body. A [`Full`](http_body_util::Full) is always ready, so this
/// polls it once; layers below [`AnnotateLayer`](crate::annotate::AnnotateLayer) get their
/// request bodies this way without an `await`.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let body = Full::new(Bytes::from_static(b"{\"model\":\"m\"}"));
/// assert_eq!(tollgate_core::body::full_bytes(body), Bytes::from_static(b"{\"model\":\"m\"}"));
/// ```
pub fn full_bytes(body: http_body_util::Full<bytes::Bytes>) -> bytes::Bytes {
    let mut body = std::pin::pin!(body);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match http_body::Body::poll_frame(body.as_mut(), &mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => bytes::Bytes::new(),
    }
}
