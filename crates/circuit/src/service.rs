use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tollgate_core::{BoxError, LlmRequest};
use tower::Service;

use crate::future::ResponseFuture;
use crate::layer::Breakers;
use crate::policy::FailurePolicy;

/// The service made by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// Readiness is the inner service's. The circuit is chosen by the request's scope, so it is
/// consulted in `call`: a refused call returns a
/// [`CircuitOpen`](tollgate_core::error::CircuitOpen) error at once, without calling the inner
/// service.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S, P> {
    inner: S,
    breakers: Arc<Breakers>,
    policy: P,
}

impl<S, P> CircuitBreaker<S, P> {
    pub(crate) fn new(inner: S, breakers: Arc<Breakers>, policy: P) -> Self {
        Self {
            inner,
            breakers,
            policy,
        }
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

impl<S, P, B, RB> Service<Request<B>> for CircuitBreaker<S, P>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    P: FailurePolicy,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let breaker = self
            .breakers
            .for_request(request.extensions().get::<LlmRequest>());
        match breaker.admit() {
            Ok(permit) => {
                let future = self.inner.call(request);
                ResponseFuture::called(future, permit, self.policy.clone())
            }
            Err(open) => ResponseFuture::rejected(open, self.policy.clone()),
        }
    }
}
