use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tollgate_core::{BoxError, Deadline, LlmRequest};
use tower::Service;

use crate::body::TimeoutBody;
use crate::config::{TimeoutConfig, Timeouts};
use crate::future::ResponseFuture;
use crate::metrics::TimeoutLabels;
use crate::plan::Plan;

/// The service made by [`TimeoutLayer`](crate::TimeoutLayer).
///
/// Readiness is the inner service's. The deadlines are fixed in `call`, from the layer's
/// [`TimeoutConfig`], the request's [`Timeouts`], its [`LlmRequest`] (does it stream, how many
/// output tokens may it take) and its [`Deadline`]. A request without an `LlmRequest` (no
/// `AnnotateLayer` above) counts as not streamed, with the base total. A request whose deadline
/// has already passed fails at once, without calling the inner service.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    config: TimeoutConfig,
}

impl<S> Timeout<S> {
    pub(crate) fn new(inner: S, config: TimeoutConfig) -> Self {
        Self { inner, config }
    }

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

impl<S, B, RB> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TimeoutBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let now = Instant::now();
        let extensions = request.extensions();
        let plan = Plan::new(
            &self.config,
            extensions.get::<Timeouts>(),
            extensions.get::<LlmRequest>(),
            extensions.get::<Deadline>().copied(),
            now,
        );
        let labels = TimeoutLabels::of(extensions.get::<LlmRequest>());
        match plan.headers() {
            Some((due, limit)) if due <= now => ResponseFuture::expired(limit, plan, labels),
            _ => ResponseFuture::called(self.inner.call(request), plan, labels),
        }
    }
}
