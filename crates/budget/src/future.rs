//! The response future of [`Budget`](crate::Budget).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tollgate_core::BoxError;

use crate::reservation::Reservation;

pin_project! {
    /// Runs the call, holding its reservation, and settles it with what the answer says; a
    /// refused call is an error at once. Dropped, it settles what it holds (see the
    /// [crate docs](crate), "What a call is charged").
    pub struct BudgetFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Refused { error: Option<BoxError> },
        Calling { #[pin] future: F, reservation: Option<Reservation> },
    }
}

impl<F> BudgetFuture<F> {
    pub(crate) fn calling(future: F, reservation: Option<Reservation>) -> Self {
        Self {
            state: State::Calling {
                future,
                reservation,
            },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, RB, E> Future for BudgetFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
            StateProj::Calling {
                future,
                reservation,
            } => {
                // Polled, the call may leave: from now on the provider may bill it.
                if let Some(reservation) = reservation.as_mut() {
                    reservation.sent();
                }
                let result = ready!(future.poll(cx));
                Poll::Ready(match result {
                    Ok(mut response) => {
                        if let Some(reservation) = reservation.take() {
                            reservation.settle_response(&mut response);
                        }
                        Ok(response)
                    }
                    Err(error) => {
                        let error = error.into();
                        if let Some(reservation) = reservation.take() {
                            reservation.settle_error(error.as_ref());
                        }
                        Err(error)
                    }
                })
            }
        }
    }
}

impl<F> fmt::Debug for BudgetFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetFuture").finish_non_exhaustive()
    }
}

#[cfg(feature = "redis")]
pub use self::fleet::RedisBudgetFuture;

#[cfg(feature = "redis")]
mod fleet {
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use http::{Request, Response};
    use pin_project_lite::pin_project;
    use tollgate_core::{BoxError, PendingCall};
    use tower::Service;

    use super::BudgetFuture;
    use crate::reservation::Reservation;

    /// The reservation of a call in Redis, under way.
    pub(crate) type Reserving =
        Pin<Box<dyn Future<Output = Result<Reservation, BoxError>> + Send + 'static>>;

    pin_project! {
        /// The response future of a [`Budget`](crate::Budget) whose books are in Redis:
        /// reserves the call's worst case (a round trip, at most the command timeout), then
        /// calls the inner service and settles like [`BudgetFuture`]. Dropped while
        /// reserving, it gives back whatever the reservation took.
        pub struct RedisBudgetFuture<S, B>
        where
            S: Service<Request<B>>,
        {
            #[pin]
            state: State<S, B, S::Future>,
        }
    }

    pin_project! {
        #[project = StateProj]
        enum State<S, B, F> {
            Refused { error: Option<BoxError> },
            Reserving { reserve: Reserving, call: PendingCall<S, Request<B>> },
            Readying { reservation: Option<Reservation>, call: PendingCall<S, Request<B>> },
            Calling { #[pin] future: BudgetFuture<F> },
        }
    }

    impl<S, B> RedisBudgetFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        pub(crate) fn reserving(reserve: Reserving, inner: S, request: Request<B>) -> Self {
            Self {
                state: State::Reserving {
                    reserve,
                    call: PendingCall::new(inner, request),
                },
            }
        }

        /// A call counted nowhere (no `LlmRequest`).
        pub(crate) fn uncounted(inner: S, request: Request<B>) -> Self {
            Self {
                state: State::Readying {
                    reservation: None,
                    call: PendingCall::new(inner, request),
                },
            }
        }

        pub(crate) fn refused(error: BoxError) -> Self {
            Self {
                state: State::Refused { error: Some(error) },
            }
        }
    }

    impl<S, B, RB> Future for RedisBudgetFuture<S, B>
    where
        S: Service<Request<B>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
    {
        type Output = Result<Response<RB>, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut state = self.project().state;
            loop {
                match state.as_mut().project() {
                    StateProj::Refused { error } => {
                        return Poll::Ready(Err(error.take().expect("polled after completion")));
                    }
                    StateProj::Reserving { reserve, call } => {
                        let next = match ready!(reserve.as_mut().poll(cx)) {
                            Ok(reservation) => State::Readying {
                                reservation: Some(reservation),
                                call: call.take(),
                            },
                            Err(error) => State::Refused { error: Some(error) },
                        };
                        state.set(next);
                    }
                    StateProj::Readying { reservation, call } => {
                        // An inner service that fails before the call sent nothing: the
                        // reservation, dropped unsent, is given back.
                        let future = match ready!(call.poll_call(cx)) {
                            Ok(future) => future,
                            Err(error) => {
                                drop(reservation.take());
                                return Poll::Ready(Err(error.into()));
                            }
                        };
                        let future = BudgetFuture::calling(future, reservation.take());
                        state.set(State::Calling { future });
                    }
                    StateProj::Calling { future } => return future.poll(cx),
                }
            }
        }
    }

    impl<S, B> fmt::Debug for RedisBudgetFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisBudgetFuture").finish_non_exhaustive()
        }
    }
}
