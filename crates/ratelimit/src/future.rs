//! The response future of [`RateLimit`](crate::RateLimit): waits for the request's turn, calls
//! the inner service, and hands the answer to the reservation's `Ticket` to settle.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tollgate_core::error::ExceedsLimit;
use tollgate_core::{BoxError, PendingCall};
use tower::Service;

use crate::metrics::Refused;
use crate::reservation::{Line, Ticket, refusal_error};
use crate::store::{Refusal, Store};

pin_project! {
    /// Waits for the request's turn, then runs the inner service and settles the reservation
    /// with what the response says.
    pub struct RateLimitFuture<S, St, B>
    where
        S: Service<Request<B>>,
        St: Store,
    {
        #[pin]
        state: State<St::Reserve, S, B, S::Future>,
        ticket: Option<Ticket<St>>,
    }
}

pin_project! {
    // The call before it is made and its future after share the space (`PendingCall`).
    #[project = StateProj]
    enum State<R, S, B, F> {
        Reserving { #[pin] reserve: R, call: PendingCall<S, Request<B>> },
        Queued { line: Line, call: PendingCall<S, Request<B>> },
        Readying { call: PendingCall<S, Request<B>> },
        Calling { #[pin] future: F },
    }
}

impl<S, St, B> RateLimitFuture<S, St, B>
where
    S: Service<Request<B>>,
    St: Store,
{
    /// A request that may go now if capacity allows (`reserve` asks for it without waiting).
    pub(crate) fn reserving(
        reserve: St::Reserve,
        inner: S,
        request: Request<B>,
        ticket: Ticket<St>,
    ) -> Self {
        Self {
            state: State::Reserving {
                reserve,
                call: PendingCall::new(inner, request),
            },
            ticket: Some(ticket),
        }
    }

    /// A request that joins the line behind others already waiting.
    pub(crate) fn queued(inner: S, request: Request<B>, ticket: Ticket<St>) -> Self {
        let line = ticket.wait_in_line();
        Self {
            state: State::Queued {
                line,
                call: PendingCall::new(inner, request),
            },
            ticket: Some(ticket),
        }
    }
}

impl<S, St, B, RB> Future for RateLimitFuture<S, St, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    St: Store,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reserving { reserve, call } => match ready!(reserve.poll(cx)) {
                    Ok(_) => {
                        if let Some(ticket) = this.ticket.as_mut() {
                            ticket.admitted();
                        }
                        let call = call.take();
                        this.state.set(State::Readying { call });
                    }
                    Err(Refusal::Wait { .. }) => {
                        let ticket = this.ticket.as_ref().expect("polled after completion");
                        let line = ticket.wait_in_line();
                        let call = call.take();
                        this.state.set(State::Queued { line, call });
                    }
                    Err(refusal) => {
                        if let Some(ticket) = this.ticket.as_ref() {
                            ticket.refused(Refused::ExceedsLimit);
                        }
                        return Poll::Ready(Err(refusal_error(refusal)));
                    }
                },
                StateProj::Queued { line, call } => {
                    if let Err(error) = ready!(line.as_mut().poll(cx)) {
                        if let Some(ticket) = this.ticket.as_ref() {
                            let why = if error.is::<ExceedsLimit>() {
                                Refused::ExceedsLimit
                            } else {
                                Refused::Wait
                            };
                            ticket.refused(why);
                        }
                        return Poll::Ready(Err(error));
                    }
                    if let Some(ticket) = this.ticket.as_mut() {
                        ticket.admitted();
                    }
                    let call = call.take();
                    this.state.set(State::Readying { call });
                }
                StateProj::Readying { call } => {
                    // A failure here drops the ticket, which gives the reservation back.
                    let future = ready!(call.poll_call(cx)).map_err(Into::into)?;
                    if let Some(ticket) = this.ticket.as_mut() {
                        ticket.sent();
                    }
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let ticket = this.ticket.take();
                    return Poll::Ready(match result {
                        Ok(response) => {
                            if let Some(ticket) = ticket {
                                ticket.settle_response(&response);
                            }
                            Ok(response)
                        }
                        Err(error) => {
                            let error = error.into();
                            if let Some(ticket) = ticket {
                                ticket.settle_error(error.as_ref());
                            }
                            Err(error)
                        }
                    });
                }
            }
        }
    }
}

impl<S, St, B> fmt::Debug for RateLimitFuture<S, St, B>
where
    S: Service<Request<B>>,
    St: Store,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitFuture").finish_non_exhaustive()
    }
}
