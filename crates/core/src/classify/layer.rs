use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service};

use super::future::ClassifyFuture;
use crate::body::ObservedBody;
use crate::metrics::ClassifyMetrics;
use crate::{BoxError, Clock, LlmRequest, TokioClock};

/// The default number of error-body bytes peeked at: 64 KiB, far more than any provider's
/// error JSON.
pub const DEFAULT_PEEK_LIMIT: usize = 64 * 1024;

/// Classifies every response and wraps its body; see the [module docs](super).
///
/// For a non-2xx response the future reads up to the peek limit of the body before it
/// resolves, so a server that sends error headers and then stalls stalls the call: keep a
/// timeout outside this layer (the standard stack has one).
#[derive(Clone, Debug)]
pub struct ClassifyLayer<C = TokioClock> {
    clock: C,
    peek_limit: usize,
}

impl ClassifyLayer {
    /// A layer on the tokio clock, peeking at most [`DEFAULT_PEEK_LIMIT`] error-body bytes.
    pub const fn new() -> Self {
        Self {
            clock: TokioClock,
            peek_limit: DEFAULT_PEEK_LIMIT,
        }
    }
}

impl Default for ClassifyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> ClassifyLayer<C> {
    /// Uses `clock` for send times and for reading absolute reset timestamps.
    pub fn with_clock<C2: Clock>(self, clock: C2) -> ClassifyLayer<C2> {
        ClassifyLayer {
            clock,
            peek_limit: self.peek_limit,
        }
    }

    /// Peeks at most `bytes` of an error body (0 classifies from status and headers alone).
    pub fn with_peek_limit(mut self, bytes: usize) -> Self {
        self.peek_limit = bytes;
        self
    }
}

impl<S, C: Clone> Layer<S> for ClassifyLayer<C> {
    type Service = Classify<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Classify {
            inner,
            clock: self.clock.clone(),
            peek_limit: self.peek_limit,
            metrics: ClassifyMetrics::new(),
        }
    }
}

/// The service made by [`ClassifyLayer`].
#[derive(Clone, Debug)]
pub struct Classify<S, C = TokioClock> {
    inner: S,
    clock: C,
    peek_limit: usize,
    metrics: ClassifyMetrics,
}

impl<S, C> Classify<S, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, B, RB> Service<Request<B>> for Classify<S, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
    C: Clock,
{
    type Response = Response<ObservedBody<RB>>;
    type Error = S::Error;
    type Future = ClassifyFuture<S::Future, RB, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let llm = request.extensions().get::<LlmRequest>();
        let provider = llm.map(|r| r.provider);
        let metrics = self.metrics.for_request(llm);
        let sent_at = self.clock.now();
        let future = self.inner.call(request);
        ClassifyFuture::new(
            future,
            provider,
            sent_at,
            self.clock.clone(),
            self.peek_limit,
            metrics,
        )
    }
}
