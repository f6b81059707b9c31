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
