//! The response future of [`Fallback`](crate::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Request, Response};
use http_body_util::Either;
use pin_project_lite::pin_project;
use tollgate_core::classify::response_outcome;
use tollgate_core::{BoxError, Outcome};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use crate::policy::FallbackPolicy;
use crate::service::Shared;
use crate::trigger::{Degraded, Trigger};

pin_project! {
    /// Runs the upstream call; when it fails in a way the policy names, runs the fallback with
    /// a copy of the request and marks its answer [`Degraded`].
    pub struct FallbackFuture<PF, F, B, PB, P>
    where
        F: Service<Request<B>>,
    {
        #[pin]
        state: State<PF, F, B, PB>,
        spare: Option<(Request<B>, Arc<Shared<F, P>>)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<PF, F, B, PB>
    where
        F: Service<Request<B>>,
    {
        Upstream { #[pin] future: PF },
        Fallback {
            #[pin]
            future: Oneshot<F, Request<B>>,
            degraded: Option<Degraded>,
            // What the caller gets if the fallback fails too.
            upstream: Option<Result<Response<PB>, BoxError>>,
            header: Option<http::HeaderName>,
        },
    }
}

impl<PF, F, B, PB, P> FallbackFuture<PF, F, B, PB, P>
where
    F: Service<Request<B>>,
{
    pub(crate) fn new(future: PF, request: Request<B>, shared: Arc<Shared<F, P>>) -> Self {
        Self {
            state: State::Upstream { future },
            spare: Some((request, shared)),
        }
    }
}

/// The trigger and outcome of an upstream answer that failed; `None` for a success.
fn failure<PB>(result: &Result<Response<PB>, BoxError>) -> Option<(Trigger, Outcome)> {
    match result {
        Ok(response) => {
            // Without a ClassifyLayer below, the status and headers decide.
            let outcome = response_outcome(response);
            Trigger::of(&outcome).map(|trigger| (trigger, outcome))
        }
        Err(error) => match Trigger::of_error(error.as_ref()) {
            (Some(trigger), outcome) => Some((trigger, outcome)),
            (None, _) => None,
        },
    }
}

impl<PF, F, B, PB, P, E, FB> Future for FallbackFuture<PF, F, B, PB, P>
where
    PF: Future<Output = Result<Response<PB>, E>>,
    E: Into<BoxError>,
    F: Service<Request<B>, Response = Response<FB>> + Clone,
    F::Error: Into<BoxError>,
    P: FallbackPolicy,
{
    type Output = Result<Response<Either<PB, FB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Upstream { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let (request, shared) = this.spare.take().expect("polled after completion");
                    let Some((trigger, outcome)) = failure(&result)
                        .filter(|(trigger, outcome)| shared.policy.falls_back(*trigger, outcome))
                    else {
                        return Poll::Ready(result.map(|r| r.map(Either::Left)));
                    };
                    tracing::debug!(%trigger, %outcome, "answering from the fallback");
                    crate::metrics::fell_back(trigger.as_str());
                    let degraded = Degraded::new(trigger, outcome);
                    let mut request = request;
                    request.extensions_mut().insert(degraded.clone());
                    let future = shared.fallback.clone().oneshot(request);
                    this.state.set(State::Fallback {
                        future,
                        degraded: Some(degraded),
                        upstream: Some(result),
                        header: shared.header.clone(),
                    });
                }
                StateProj::Fallback {
                    future,
                    degraded,
                    upstream,
                    header,
                } => {
                    let result = ready!(future.poll(cx));
                    let upstream = upstream.take().expect("polled after completion");
                    let degraded = degraded.take().expect("polled after completion");
                    return Poll::Ready(match result {
                        Ok(mut response) => {
                            if let Some(name) = header.take() {
                                let value = HeaderValue::from_static(degraded.trigger.as_str());
                                response.headers_mut().insert(name, value);
                            }
                            response.extensions_mut().insert(degraded);
                            Ok(response.map(Either::Right))
                        }
                        Err(error) => {
                            let error: BoxError = error.into();
                            // A stale cache with nothing to offer, say: the upstream's failure.
                            tracing::debug!(%error, "the fallback failed too");
                            upstream.map(|r| r.map(Either::Left))
                        }
                    });
                }
            }
        }
    }
}

impl<PF, F, B, PB, P> fmt::Debug for FallbackFuture<PF, F, B, PB, P>
where
    F: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Upstream { .. } => "upstream",
            State::Fallback { .. } => "fallback",
        };
        f.debug_struct("FallbackFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
