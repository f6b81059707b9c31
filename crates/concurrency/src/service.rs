use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tollgate_core::BoxError;
use tower::Service;

use crate::body::PermitBody;
use crate::future::ResponseFuture;
use crate::layer::{Limits, Priority};

/// The service made by [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).
///
/// `poll_ready` is always ready: the partition depends on the request, so the permit is taken
/// in the response future (at once when one is free, in arrival order otherwise), before the
/// inner service is readied and called.
#[derive(Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn new(inner: S, limits: Arc<Limits>) -> Self {
        Self { inner, limits }
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

impl<S, B, RB> Service<Request<B>> for ConcurrencyLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<PermitBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let priority = request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default();
        ResponseFuture::new(&self.limits, priority, self.inner.clone(), request)
    }
}
