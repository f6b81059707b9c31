//! Counts the requests in flight, per connection (for its idle clock) and for the whole server
//! (for the shutdown's report): a request is in flight from its head's arrival to the end or
//! drop of its response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tollgate::concurrency::PermitBody;
use tower::Service;

use super::connection::ConnState;

/// One request in flight, until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    conn: Arc<ConnState>,
    server: Arc<AtomicUsize>,
}

impl InFlight {
    fn new(conn: Arc<ConnState>, server: Arc<AtomicUsize>) -> Self {
        conn.request_started();
        server.fetch_add(1, Ordering::AcqRel);
        Self { conn, server }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.server.fetch_sub(1, Ordering::AcqRel);
        self.conn.request_ended();
    }
}

/// The server's service for one connection: the app, with each request counted in flight.
#[derive(Clone, Debug)]
pub(crate) struct Tracked<S> {
    inner: S,
    conn: Arc<ConnState>,
    server: Arc<AtomicUsize>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, conn: Arc<ConnState>, server: Arc<AtomicUsize>) -> Self {
        Self {
            inner,
            conn,
            server,
        }
    }
}

impl<S, B> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<PermitBody<Body, InFlight>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        TrackedFuture {
            in_flight: Some(InFlight::new(self.conn.clone(), self.server.clone())),
            future: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The app's response future, holding the request's place in flight.
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        future: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<PermitBody<Body, InFlight>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.future.poll(cx))?;
        let in_flight = this.in_flight.take().expect("polled after completion");
        // The body holds the request's place until it ends, fails or is dropped.
        Poll::Ready(Ok(response.map(|body| PermitBody::new(body, in_flight))))
    }
}
