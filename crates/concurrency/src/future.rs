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
use tollgate_core::error::QueueTimeout;
use tollgate_core::{BoxError, PendingCall};
use tower::Service;

use crate::body::PermitBody;
use crate::layer::{Limits, Priority};
use crate::metrics::QueueMetrics;

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
        state: State<S, B, S::Future>,
        permit: Option<OwnedSemaphorePermit>,
        // A waiting call's partition metrics and when it started to wait.
        queued: Option<(QueueMetrics, Instant)>,
    }
}

pin_project! {
    // The call before it is made and its future after share the space (`PendingCall`).
    #[project = StateProj]
    enum State<S, B, F> {
        Waiting { waiting: WaitForPermit, call: PendingCall<S, Request<B>> },
        Readying { call: PendingCall<S, Request<B>> },
        Calling { #[pin] future: F },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(limits: &Limits, priority: Priority, inner: S, request: Request<B>) -> Self {
        let semaphore = limits.semaphore(priority);
        let metrics = limits.metrics(priority);
        let call = PendingCall::new(inner, request);
        let (state, permit, queued) = match semaphore.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics.admitted(Duration::ZERO);
                (State::Readying { call }, Some(permit), None)
            }
            Err(_) => (
                State::Waiting {
                    waiting: wait_for_permit(semaphore.clone(), limits.queue_timeout),
                    call,
                },
                None,
                Some((metrics.clone(), Instant::now())),
            ),
        };
        Self {
            state,
            permit,
            queued,
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
                StateProj::Waiting { waiting, call } => {
                    let waited = ready!(waiting.as_mut().poll(cx));
                    if let Some((metrics, since)) = this.queued.take() {
                        match &waited {
                            Ok(_) => metrics.admitted(since.elapsed()),
                            Err(error) if error.is::<QueueTimeout>() => metrics.timed_out(),
                            Err(_) => {}
                        }
                    }
                    *this.permit = Some(waited?);
                    let call = call.take();
                    this.state.set(State::Readying { call });
                }
                StateProj::Readying { call } => {
                    let future = ready!(call.poll_call(cx)).map_err(Into::into)?;
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
