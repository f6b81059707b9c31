//! [`Fallback`]: the service that keeps a spare of each request for the fallback.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request, Response};
use http_body_util::Either;
use tollgate_core::BoxError;
use tower::Service;

#[cfg(doc)]
use crate::FallbackLayer;
use crate::future::FallbackFuture;
use crate::policy::{FallbackPolicy, Triggers};

/// The service made by [`FallbackLayer`].
///
/// Readiness is the inner service's. Each call keeps a clone of its request (the body of an
/// annotated request is `Bytes`, so the prompt is shared, not copied) to hand to the fallback
/// if the upstream fails.
///
/// The response body is an [`Either`]: `Left` the upstream's, `Right` the fallback's. No box,
/// so no allocation on the happy path and nothing lost of either body (`Send`, `Sync`,
/// `Unpin`, size hints); callers that want one type erase it once at the top of their stack.
#[derive(Clone)]
pub struct Fallback<S, F, P = Triggers> {
    inner: S,
    // Shared by every call, so that the happy path clones an `Arc`, not the fallback service.
    shared: Arc<Shared<F, P>>,
}

/// What a call that falls back needs.
pub(crate) struct Shared<F, P> {
    pub(crate) fallback: F,
    pub(crate) policy: P,
    pub(crate) header: Option<HeaderName>,
}

impl<S, F, P> Fallback<S, F, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<F, P>>) -> Self {
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

impl<S, F, P, B, PB, FB> Service<Request<B>> for Fallback<S, F, P>
where
    S: Service<Request<B>, Response = Response<PB>>,
    S::Error: Into<BoxError>,
    F: Service<Request<B>, Response = Response<FB>> + Clone,
    F::Error: Into<BoxError>,
    P: FallbackPolicy,
    B: Clone,
{
    type Response = Response<Either<PB, FB>>;
    type Error = BoxError;
    type Future = FallbackFuture<S::Future, F, B, PB, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let spare = request.clone();
        FallbackFuture::new(self.inner.call(request), spare, self.shared.clone())
    }
}

impl<S: fmt::Debug, F, P: fmt::Debug> fmt::Debug for Fallback<S, F, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("fallback", &std::any::type_name::<F>())
            .field("policy", &self.shared.policy)
            .field("header", &self.shared.header)
            .finish()
    }
}
