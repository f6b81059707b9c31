use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower::Service;

use super::future::AnnotateFuture;
use super::layer::Config;
use crate::BoxError;

/// The service made by [`AnnotateLayer`](super::AnnotateLayer).
///
/// It forwards `Request<Full<Bytes>>`: the buffered body, cheap to clone for retries. The
/// body is buffered after the inner service is ready, so for a server that reads request
/// bodies from the network, collect the body before the stack (axum's `Bytes` extractor does)
/// rather than hold downstream capacity while a slow client uploads.
#[derive(Debug)]
pub struct Annotate<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for Annotate<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S> Annotate<S> {
    pub(super) fn from_layer(inner: S, config: Arc<Config>) -> Self {
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

impl<S, B> Service<Request<B>> for Annotate<S>
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = AnnotateFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Move the readied service into the future; keep the fresh clone for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = request.into_parts();
        let limit = self.config.max_body_bytes;
        if body.size_hint().lower() > limit as u64 {
            return AnnotateFuture::too_large(limit);
        }
        AnnotateFuture::collecting(
            Limited::new(body, limit).collect(),
            parts,
            inner,
            self.config.clone(),
        )
    }
}
