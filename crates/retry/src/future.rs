//! The response future of [`Retry`](crate::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tollgate_core::classify::{classify_error, is_local_refusal, response_outcome};
use tollgate_core::{BoxError, LlmRequest, Outcome};
use tower::{Service, ServiceExt};

use crate::layer::Shared;
use crate::metrics;
use crate::policy::{Decision, Retries, RetryPolicy};

/// What the retries of a request came to, in the final response's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retried {
    /// Attempts made, the first included (a hedge's backup counts as one more).
    pub attempts: u32,
    /// Time spent waiting between attempts.
    pub waited: Duration,
}

type Attempt<RB> = Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>;

pin_project! {
    /// Runs attempts until one succeeds, one cannot be retried, or the attempts, the budget or
    /// the deadline run out.
    pub struct RetryFuture<S, B, P>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, S::Response>,
        service: S,
        template: Request<B>,
        shared: Arc<Shared<P>>,
        retries: Retries,
        hedge: Option<Duration>,
        started: Instant,
    }
}

pin_project! {
    #[project = StateProj]
    // An attempt's future is the whole stack below (1.5 KB in the standard stack): boxed, the
    // futures above this one are a few hundred bytes and each move of them copies that much.
    enum State<F, R> {
        Calling { future: Pin<Box<F>> },
        Hedging { attempt: Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>> },
        Waiting { sleep: Pin<Box<Sleep>> },
        Readying,
    }
}

/// The outcome of an attempt, from the response's extensions or classified here.
fn outcome_of<RB>(result: &Result<Response<RB>, BoxError>) -> Outcome {
    match result {
        Ok(response) => response_outcome(response),
        Err(error) => classify_error(error.as_ref()),
    }
}

impl<S, B, P, RB> RetryFuture<S, B, P>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Clone + Send + 'static,
    RB: Send + 'static,
    P: RetryPolicy,
{
    pub(crate) fn start(
        mut service: S,
        request: Request<B>,
        shared: Arc<Shared<P>>,
        retries: Retries,
        hedge: Option<Duration>,
        now: Instant,
    ) -> Self {
        let template = request.clone();
        let state = match hedge {
            Some(delay) => State::Hedging {
                attempt: hedged(service.clone(), request, delay, shared.clone()),
            },
            None => State::Calling {
                future: Box::pin(service.call(request)),
            },
        };
        Self {
            state,
            service,
            template,
            shared,
            retries,
            hedge,
            started: now,
        }
    }
}

/// One attempt with a backup: if the first call has not answered after `delay`, a second is
/// sent (budget permitting); the first success wins and the other is cancelled (dropped).
fn hedged<S, B, P, RB>(
    service: S,
    request: Request<B>,
    delay: Duration,
    shared: Arc<Shared<P>>,
) -> Attempt<RB>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Clone + Send + 'static,
    RB: Send + 'static,
    P: RetryPolicy,
{
    Box::pin(async move {
        let started = Instant::now();
        let send = |service: S, request: Request<B>| async move {
            service
                .oneshot(request)
                .await
                .map_err(Into::<BoxError>::into)
        };
        let primary = send(service.clone(), request.clone());
        tokio::pin!(primary);
        tokio::select! {
            result = &mut primary => return result,
            () = tokio::time::sleep(delay) => {}
        }
        if !shared.budget.withdraw(Instant::now()) {
            return primary.await;
        }
        tracing::debug!(after = ?started.elapsed(), "sending a hedged attempt");
        metrics::hedged(request.extensions().get::<LlmRequest>());
        let backup = send(service, request);
        tokio::pin!(backup);
        let succeeded = |result: &Result<Response<RB>, BoxError>| outcome_of(result).is_success();
        tokio::select! {
            result = &mut primary => {
                if succeeded(&result) { return result; }
                backup.await
            }
            result = &mut backup => {
                if succeeded(&result) { return result; }
                primary.await
            }
        }
    })
}

impl<S, B, P, RB> Future for RetryFuture<S, B, P>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Clone + Send + 'static,
    RB: Send + 'static,
    P: RetryPolicy,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    ready!(future.as_mut().poll(cx)).map_err(Into::into)
                }
                StateProj::Hedging { attempt } => ready!(attempt.as_mut().poll(cx)),
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                    continue;
                }
                StateProj::Readying => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    let request = this.template.clone();
                    let next = match *this.hedge {
                        Some(delay) => State::Hedging {
                            attempt: hedged(
                                this.service.clone(),
                                request,
                                delay,
                                this.shared.clone(),
                            ),
                        },
                        None => State::Calling {
                            future: Box::pin(this.service.call(request)),
                        },
                    };
                    this.state.set(next);
                    continue;
                }
            };
            let now = Instant::now();
            let outcome = outcome_of(&result);
            if outcome.is_success() && this.shared.config.hedge.is_some() {
                this.shared.latencies.record(now - *this.started);
            }
            // A refusal by a layer below (an open breaker, a local limit or throttle) never
            // reached the upstream.
            let local = result
                .as_ref()
                .err()
                .is_some_and(|e| is_local_refusal(e.as_ref()));
            let decision = this
                .retries
                .decide(this.shared, this.template, &outcome, local, now);
            let wait = match decision {
                Decision::Retry(wait) => wait,
                Decision::Answer(why) => {
                    let retried = Retried {
                        attempts: this.retries.attempts,
                        waited: this.retries.waited,
                    };
                    if retried.attempts > 1 {
                        tracing::debug!(attempts = retried.attempts, waited = ?retried.waited, outcome = %outcome, why, "retries done");
                    }
                    return Poll::Ready(result.map(|mut response| {
                        response.extensions_mut().insert(retried);
                        response
                    }));
                }
            };
            drop(result);
            *this.started = now + wait;
            if wait.is_zero() {
                this.state.set(State::Readying);
            } else {
                this.state.set(State::Waiting {
                    sleep: Box::pin(tokio::time::sleep(wait)),
                });
            }
        }
    }
}

impl<S, B, P> fmt::Debug for RetryFuture<S, B, P>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture")
            .field("attempts", &self.retries.attempts)
            .field("waited", &self.retries.waited)
            .finish_non_exhaustive()
    }
}
