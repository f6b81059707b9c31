use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tollgate_concurrency::{PermitBody, Priority};
use tollgate_core::{BoxError, Deadline, LlmRequest};
use tower::Service;

use crate::future::{Lease, ResponseFuture};
use crate::layer::Shared;

/// The service made by [`OverloadLayer`](crate::OverloadLayer).
///
/// `poll_ready` is always ready: the scope (and so the limit) depends on the request, so the
/// permit is taken in the response future — at once when one is free, in arrival order
/// otherwise — before the inner service is readied and called. A request the throttle sheds
/// fails at once with [`Overloaded`](tollgate_core::error::Overloaded).
#[derive(Debug)]
pub struct Overload<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Overload<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> Overload<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
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

impl<S, B, RB> Service<Request<B>> for Overload<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<PermitBody<RB, Lease>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let controller = self
            .shared
            .controllers
            .for_request(request.extensions().get::<LlmRequest>());
        let settings = &self.shared.settings;
        if settings.throttle.is_some() {
            let batch = request.extensions().get::<Priority>() == Some(&Priority::Batch);
            let p = controller.rejection_probability(batch);
            if p > 0.0 && self.shared.draw() < p {
                controller.rejected(Instant::now(), batch);
                return ResponseFuture::shed();
            }
        }
        let queue_timeout = match (
            settings.queue_timeout,
            request.extensions().get::<Deadline>(),
        ) {
            (Some(timeout), Some(deadline)) => {
                Some(timeout.min(deadline.remaining(Instant::now())))
            }
            (None, Some(deadline)) => Some(deadline.remaining(Instant::now())),
            (timeout, None) => timeout,
        };
        ResponseFuture::new(
            controller,
            queue_timeout,
            settings.latency,
            self.inner.clone(),
            request,
        )
    }
}
