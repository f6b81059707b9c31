//! The response future of [`Timeout`](crate::Timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tollgate_core::BoxError;
use tollgate_core::body::EndOfStream;

use crate::body::TimeoutBody;
use crate::error::{FirstByteTimeout, Limit};
use crate::metrics::TimeoutLabels;
use crate::plan::Plan;

pin_project! {
    /// Waits for the response headers until they are due, then hands the body over in a
    /// [`TimeoutBody`] that keeps the clock running.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        // Boxed so that the body can keep it: a pinned `Sleep` cannot move, and a body that is
        // `Unpin` whenever the inner one is stays easy to read (`BodyExt::frame`).
        sleep: Option<Pin<Box<Sleep>>>,
        plan: Plan,
        labels: TimeoutLabels,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Expired { limit: Limit },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F, plan: Plan, labels: TimeoutLabels) -> Self {
        Self {
            kind: Kind::Called { future },
            sleep: plan
                .headers()
                .map(|(due, _)| Box::pin(tokio::time::sleep_until(due))),
            plan,
            labels,
        }
    }

    pub(crate) fn expired(limit: Limit, plan: Plan, labels: TimeoutLabels) -> Self {
        Self {
            kind: Kind::Expired { limit },
            sleep: None,
            plan,
            labels,
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let future = match this.kind.project() {
            KindProj::Expired { limit } => {
                this.labels.expired(*limit);
                let error = FirstByteTimeout {
                    waited: Instant::now().saturating_duration_since(this.plan.start),
                    limit: *limit,
                };
                return Poll::Ready(Err(Box::new(error)));
            }
            KindProj::Called { future } => future,
        };
        // The answer first: one that is ready when the clock runs out still counts.
        if let Poll::Ready(result) = future.poll(cx) {
            return Poll::Ready(match result {
                Ok(response) => {
                    let end = response.extensions().get::<EndOfStream>().cloned();
                    let (sleep, plan) = (this.sleep.take(), *this.plan);
                    let labels = std::mem::take(this.labels);
                    Ok(response.map(|body| TimeoutBody::new(body, sleep, plan, end, labels)))
                }
                Err(error) => Err(error.into()),
            });
        }
        if let Some(sleep) = this.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            let limit = this.plan.headers().map_or(Limit::Total, |(_, limit)| limit);
            this.labels.expired(limit);
            let error = FirstByteTimeout {
                waited: Instant::now().saturating_duration_since(this.plan.start),
                limit,
            };
            return Poll::Ready(Err(Box::new(error)));
        }
        Poll::Pending
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}
