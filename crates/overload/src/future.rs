//! The response future of [`Overload`](crate::Overload), and the lease its response body holds.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tollgate_concurrency::PermitBody;
use tollgate_concurrency::future::{WaitForPermit, wait_for_permit};
use tollgate_core::body::{EndOfStream, EndReason, StreamEnd};
use tollgate_core::classify::{
    classify_error, is_deadline_expiry, is_local_refusal, response_outcome,
};
use tollgate_core::error::Overloaded;
use tollgate_core::{BoxError, Outcome, OutcomeKind, PendingCall};
use tower::Service;

pub use crate::controller::Lease;
use crate::controller::{Controller, Ending, Ticket};
use crate::layer::LatencyMeasure;

pin_project! {
    /// Takes a permit (waiting in line if need be), runs the inner call, and records how it
    /// went — when the body ends, for a stream. The permit moves into the response body.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, S::Future>,
        controller: Option<Arc<Controller>>,
        permit: Option<OwnedSemaphorePermit>,
        running: Option<(Lease, Ticket)>,
        latency: LatencyMeasure,
    }
}

pin_project! {
    // The call before it is made and its future after share the space (`PendingCall`).
    #[project = StateProj]
    enum State<S, B, F> {
        Shed,
        Waiting { waiting: WaitForPermit, call: PendingCall<S, Request<B>> },
        Readying { call: PendingCall<S, Request<B>> },
        Calling { #[pin] future: F },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        controller: Arc<Controller>,
        timeout: Option<Duration>,
        latency: LatencyMeasure,
        inner: S,
        request: Request<B>,
    ) -> Self {
        let semaphore = controller.limiter.semaphore().clone();
        let call = PendingCall::new(inner, request);
        let (state, permit) = match semaphore.clone().try_acquire_owned() {
            Ok(permit) => (State::Readying { call }, Some(permit)),
            Err(_) => (
                State::Waiting {
                    waiting: wait_for_permit(semaphore, timeout),
                    call,
                },
                None,
            ),
        };
        Self {
            state,
            controller: Some(controller),
            permit,
            running: None,
            latency,
        }
    }

    pub(crate) fn shed() -> Self {
        Self {
            state: State::Shed,
            controller: None,
            permit: None,
            running: None,
            latency: LatencyMeasure::default(),
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<PermitBody<RB, Lease>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Shed => {
                    return Poll::Ready(Err(Box::new(Overloaded { retry_after: None })));
                }
                StateProj::Waiting { waiting, call } => {
                    *this.permit = Some(ready!(waiting.as_mut().poll(cx))?);
                    let call = call.take();
                    this.state.set(State::Readying { call });
                }
                StateProj::Readying { call } => {
                    let future = ready!(call.poll_call(cx)).map_err(Into::into)?;
                    let controller = this.controller.as_ref().expect("a call has a scope");
                    let permit = this.permit.take().expect("a call holds a permit");
                    // The clock starts once the call is made.
                    *this.running = Some(controller.start(permit));
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let (lease, ticket) = this.running.take().expect("polled after completion");
                    return Poll::Ready(match result {
                        Ok(response) => {
                            settle(&response, ticket, *this.latency);
                            Ok(response.map(|body| PermitBody::new(body, lease)))
                        }
                        Err(error) => {
                            let error = error.into();
                            if is_deadline_expiry(error.as_ref()) {
                                // The caller's own deadline: like a cancelled call, it says
                                // nothing about the upstream, so nothing is recorded.
                                drop(ticket);
                            } else {
                                ticket.record(error_ending(error.as_ref()));
                            }
                            Err(error)
                        }
                    });
                }
            }
        }
    }
}

/// What an outcome says about load.
fn ending(outcome: &Outcome, latency: Duration) -> Ending {
    match outcome.kind {
        OutcomeKind::Success => Ending::Success(latency),
        OutcomeKind::Overloaded | OutcomeKind::Timeout => Ending::Dropped,
        _ => Ending::Neutral,
    }
}

/// An error refused by a layer below (a breaker, a rate limiter, another queue) never reached
/// the upstream: it says nothing about its load.
fn error_ending(error: &(dyn std::error::Error + 'static)) -> Ending {
    if is_local_refusal(error) {
        Ending::Neutral
    } else {
        ending(&classify_error(error), Duration::ZERO)
    }
}

/// Records a response: a failure now; a success when its body ends (a stream can still fail),
/// or now when nothing reports the end.
fn settle<RB>(response: &Response<RB>, ticket: Ticket, measure: LatencyMeasure) {
    let first_byte = ticket.started.elapsed();
    let now = ending(&response_outcome(response), first_byte);
    match response.extensions().get::<EndOfStream>() {
        Some(end) if matches!(now, Ending::Success(_)) => {
            end.on_end(move |end| finish(ticket, end, first_byte, measure));
        }
        _ => ticket.record(now),
    }
}

fn finish(ticket: Ticket, end: &StreamEnd, first_byte: Duration, measure: LatencyMeasure) {
    match (&end.error, end.reason) {
        (Some(outcome), _) => ticket.record(ending(outcome, first_byte)),
        // The caller walked away mid-stream: that says nothing about the upstream.
        (None, EndReason::Dropped) => drop(ticket),
        (None, _) => {
            let latency = match measure {
                LatencyMeasure::FirstByte => first_byte,
                LatencyMeasure::PerOutputToken => {
                    let whole = ticket.started.elapsed();
                    match end.usage.map(|u| u.output_tokens) {
                        Some(tokens) if tokens > 0 => {
                            whole / tokens.min(u64::from(u32::MAX)) as u32
                        }
                        _ => whole,
                    }
                }
            };
            ticket.record(Ending::Success(latency));
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &(self.permit.is_some() || self.running.is_some()))
            .finish_non_exhaustive()
    }
}
