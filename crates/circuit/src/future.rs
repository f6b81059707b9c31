//! The response future of [`CircuitBreaker`](crate::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tollgate_core::body::{EndOfStream, EndReason, StreamEnd};
use tollgate_core::classify::{
    classify_error, is_deadline_expiry, is_local_refusal, response_outcome,
};
use tollgate_core::error::CircuitOpen;
use tollgate_core::{BoxError, Outcome};

use crate::breaker::{Permit, Verdict};
use crate::policy::FailurePolicy;

pin_project! {
    /// Runs the inner call (or refuses at once) and counts its outcome against the circuit; a
    /// streamed success is counted when its stream ends.
    pub struct ResponseFuture<F, P> {
        #[pin]
        kind: Kind<F>,
        permit: Option<Permit>,
        policy: P,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { error: Option<CircuitOpen> },
    }
}

impl<F, P> ResponseFuture<F, P> {
    pub(crate) fn called(future: F, permit: Permit, policy: P) -> Self {
        Self {
            kind: Kind::Called { future },
            permit: Some(permit),
            policy,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen, policy: P) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
            permit: None,
            policy,
        }
    }
}

impl<F, P, RB, E> Future for ResponseFuture<F, P>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    P: FailurePolicy,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                Poll::Ready(Err(Box::new(error)))
            }
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                let permit = this.permit.take().expect("polled after completion");
                Poll::Ready(match result {
                    Ok(response) => {
                        settle(&response, permit, this.policy);
                        Ok(response)
                    }
                    Err(error) => {
                        let error = error.into();
                        if is_deadline_expiry(error.as_ref()) || is_local_refusal(error.as_ref()) {
                            // The caller's own deadline ran out, or a layer below refused the
                            // call (a local limit, a shed, a queue given up, a lower breaker):
                            // like a cancelled call, it says nothing about the upstream, which
                            // never saw it (a probe goes back).
                            drop(permit);
                        } else {
                            let outcome = classify_error(error.as_ref());
                            permit.record(verdict(this.policy, &outcome, false));
                        }
                        Err(error)
                    }
                })
            }
        }
    }
}

fn verdict<P: FailurePolicy>(policy: &P, outcome: &Outcome, slow: bool) -> Verdict {
    Verdict {
        failure: policy.is_failure(outcome),
        slow,
        retry_after: outcome.retry_after,
    }
}

/// Counts a response: a failure now; a success when its body ends (a stream can still fail),
/// or now when nothing reports the end. A call is slow by its time to response headers — for
/// a stream, its first byte — so a long answer is not a slow one.
fn settle<RB, P: FailurePolicy>(response: &Response<RB>, permit: Permit, policy: &P) {
    // Slow means slower than the threshold, as Resilience4j counts it.
    let slow = permit.is_slow();
    let now = verdict(policy, &response_outcome(response), slow);
    match response.extensions().get::<EndOfStream>() {
        Some(end) if !now.failure => {
            let policy = policy.clone();
            end.on_end(move |end| finish(permit, &policy, slow, end));
        }
        _ => permit.record(now),
    }
}

fn finish<P: FailurePolicy>(permit: Permit, policy: &P, slow: bool, end: &StreamEnd) {
    match (&end.error, end.reason) {
        (Some(outcome), _) => permit.record(verdict(policy, outcome, slow)),
        // The caller walked away mid-stream: that says nothing about the upstream.
        (None, EndReason::Dropped) => drop(permit),
        (None, _) => permit.record(Verdict {
            failure: false,
            slow,
            retry_after: None,
        }),
    }
}

impl<F, P> fmt::Debug for ResponseFuture<F, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
