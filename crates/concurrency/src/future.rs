//! The response future of [`ConcurrencyLimit`](crate::ConcurrencyLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::error::QueueTimeout;
use tower::Service;

use crate::body::PermitBody;

/// The slow path: waiting in line for a permit (boxed: only a request that waits pays for it).
pub type WaitForPermit =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, BoxError>> + Send>>;

pin_project! {
    /// Takes a permit (waiting in line if need be), then runs the inner call; the permit moves
    /// into the response body.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        inner: S,
        request: Option<Request<B>>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Waiting { waiting: WaitForPermit },
        Readying,
        Calling { #[pin] future: F },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        semaphore: Arc<Semaphore>,
        timeout: Option<Duration>,
        inner: S,
        request: Request<B>,
    ) -> Self {
        let (state, permit) = match semaphore.clone().try_acquire_owned() {
            Ok(permit) => (State::Readying, Some(permit)),
            Err(_) => (
                State::Waiting {
                    waiting: wait_for_permit(semaphore, timeout),
                },
                None,
            ),
        };
        Self {
            state,
            inner,
            request: Some(request),
            permit,
        }
    }
}

/// Waits in line (FIFO) for a permit of `semaphore`, giving up after `timeout` with
/// [`QueueTimeout`].
pub fn wait_for_permit(semaphore: Arc<Semaphore>, timeout: Option<Duration>) -> WaitForPermit {
    Box::pin(async move {
        let started = Instant::now();
        let acquire = semaphore.acquire_owned();
        let acquired = match timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, acquire)
                    .await
                    .map_err(|_| -> BoxError {
                        Box::new(QueueTimeout {
                            waited: started.elapsed(),
                        })
                    })?
            }
            None => acquire.await,
        };
        acquired.map_err(|_| -> BoxError { "the limit was closed".into() })
    })
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<PermitBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { waiting } => {
                    *this.permit = Some(ready!(waiting.as_mut().poll(cx))?);
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    ready!(this.inner.poll_ready(cx)).map_err(Into::into)?;
                    let request = this.request.take().expect("polled after completion");
                    let future = this.inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let permit = this.permit.take().expect("a call holds a permit");
                    return Poll::Ready(Ok(response.map(|body| PermitBody::new(body, permit))));
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
