//! [`Optional`]: a layer that may be left out of the stack, at no cost when it is.
//!
//! `ServiceBuilder::option_layer` needs both branches to answer with the same type; Tollgate's
//! layers wrap the response body in their own types, so a left-out layer's branch answers
//! with the inner body and the two are joined in an [`Either`] body, without boxing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body_util::Either;
use pin_project_lite::pin_project;
use tollgate_core::BoxError;
use tower::{Layer, Service};

/// `L`, or nothing.
#[derive(Clone, Debug)]
pub(crate) struct Optional<L>(pub(crate) Option<L>);

impl<L: Layer<S>, S> Layer<S> for Optional<L> {
    type Service = OptionalService<L::Service, S>;

    #[inline]
    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            Some(layer) => OptionalService::On(layer.layer(inner)),
            None => OptionalService::Off(inner),
        }
    }
}

/// The layer's service, or the inner service alone.
#[derive(Clone, Debug)]
pub(crate) enum OptionalService<A, B> {
    On(A),
    Off(B),
}

impl<A, B, R, AB, BB> Service<R> for OptionalService<A, B>
where
    A: Service<R, Response = Response<AB>>,
    A::Error: Into<BoxError>,
    B: Service<R, Response = Response<BB>>,
    B::Error: Into<BoxError>,
{
    type Response = Response<Either<AB, BB>>;
    type Error = BoxError;
    type Future = OptionalFuture<A::Future, B::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::On(a) => a.poll_ready(cx).map_err(Into::into),
            Self::Off(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, request: R) -> Self::Future {
        match self {
            Self::On(a) => OptionalFuture::On {
                future: a.call(request),
            },
            Self::Off(b) => OptionalFuture::Off {
                future: b.call(request),
            },
        }
    }
}

pin_project! {
    /// The response of the layer's service, or of the inner one.
    #[project = Projected]
    pub(crate) enum OptionalFuture<FA, FB> {
        On { #[pin] future: FA },
        Off { #[pin] future: FB },
    }
}

impl<FA, FB, AB, BB, EA, EB> Future for OptionalFuture<FA, FB>
where
    FA: Future<Output = Result<Response<AB>, EA>>,
    FB: Future<Output = Result<Response<BB>, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<Response<Either<AB, BB>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project() {
            Projected::On { future } => ready!(future.poll(cx))
                .map(|r| r.map(Either::Left))
                .map_err(Into::into),
            Projected::Off { future } => ready!(future.poll(cx))
                .map(|r| r.map(Either::Right))
                .map_err(Into::into),
        })
    }
}
