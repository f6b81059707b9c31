//! How a call goes through the pool: pick a member, call it, record the answer, and fail over
//! to another member while the answer says another may do better and the request may be sent
//! again; wait for a member to be back, or fail, when none may serve.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tollgate_core::classify::{
    classify_error, is_deadline_expiry, is_local_refusal, response_outcome,
};
use tollgate_core::error::CircuitOpen;
use tollgate_core::{BoxError, Deadline, Delivery, Outcome, OutcomeKind, Repeat};
use tower::{Service, ServiceExt};

use crate::exhausted::NoMemberAvailable;
use crate::health::{Reason, Source};
use crate::metrics;
use crate::pool::{Pool, Served, Shared};
use crate::select::InFlight;

/// What a request does when no member may serve it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum WhenExhausted {
    /// Waits until the earliest member is back, unless that is past the request's
    /// [`Deadline`] (default).
    #[default]
    Wait,
    /// Fails at once with [`NoMemberAvailable`] (a local refusal whose source is a
    /// [`RateLimited`](tollgate_core::error::RateLimited)) and the wait until the earliest
    /// member is back.
    Fail,
}

impl Shared {
    fn record(
        &self,
        member: usize,
        outcome: &Outcome,
        source: Source,
        latency: Duration,
    ) -> Option<Reason> {
        let now = Instant::now();
        let mut health = self.health();
        let reason = health[member].record(outcome, source, latency, now, &self.cooldowns);
        if metrics::ENABLED {
            // Every member's: one whose cooldown ended comes back without a call of its own.
            let best = Self::best_latency(&health);
            for (health, metrics) in health.iter_mut().zip(&self.metrics) {
                metrics.score(health.score(now, best));
            }
        }
        drop(health);
        if let Some(reason) = reason {
            self.sharing.cooled(member);
            self.metrics[member].cooldown(reason);
            tracing::warn!(
                member = %self.members[member].name,
                outcome = %outcome.kind.as_str(),
                ?reason,
                retry_after = ?outcome.retry_after,
                "pool member out of rotation"
            );
        }
        reason
    }
}

/// What to do after a member's answer.
enum Next {
    /// Give it to the caller.
    Answer,
    /// Another member may do better.
    Failover,
    /// Only a member with a larger context window may do better.
    LargerContext,
}

fn next_for(kind: OutcomeKind) -> Next {
    match kind {
        OutcomeKind::RateLimited(_)
        | OutcomeKind::QuotaExhausted
        | OutcomeKind::AuthError
        | OutcomeKind::Overloaded
        | OutcomeKind::ServerError
        | OutcomeKind::Timeout
        | OutcomeKind::ConnectError
        | OutcomeKind::ConnectionLost => Next::Failover,
        OutcomeKind::ContextLengthExceeded => Next::LargerContext,
        _ => Next::Answer,
    }
}

/// The pool's response future: tries members in turn, waiting for one to be back if need be.
///
/// Boxed: a request may try several members and wait between them, and the box (one
/// allocation) is small next to a call to an LLM.
pub struct ResponseFuture<RB> {
    inner: Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>,
}

impl<RB> fmt::Debug for ResponseFuture<RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<RB> Future for ResponseFuture<RB> {
    type Output = Result<Response<RB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, RB> Service<Request<Full<Bytes>>> for Pool<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Members are readied when one is picked: which one depends on the request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        ResponseFuture {
            inner: Box::pin(route(self.shared.clone(), self.services.clone(), request)),
        }
    }
}

/// Where an error came from: the member's breaker, another layer of its stack that refused
/// the call unsent, or the way to the upstream.
fn source_of(error: &(dyn std::error::Error + 'static)) -> Source {
    if !is_local_refusal(error) {
        Source::Upstream
    } else if std::iter::successors(Some(error), |e| e.source()).any(|e| {
        // Also inside an `io::Error`, whose own `source()` skips its payload.
        e.is::<CircuitOpen>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<CircuitOpen>())
    }) {
        Source::Breaker
    } else {
        Source::OwnLimit
    }
}

async fn route<S, RB>(
    shared: Arc<Shared>,
    services: Arc<[S]>,
    request: Request<Full<Bytes>>,
) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
    let affinity = shared.affinity_of(&request);
    let key = request
        .headers()
        .get(&shared.idempotency_header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let avoid = key
        .as_deref()
        .map(|k| shared.remembered(k))
        .unwrap_or_default();
    let mut tried: Vec<usize> = Vec::new();
    let mut context_floor: Option<u64> = None;
    let mut last: Option<Result<Response<RB>, BoxError>> = None;
    loop {
        let now = Instant::now();
        // Members that failed this request's earlier attempts come last.
        let skip: Vec<usize> = tried.iter().chain(&avoid).copied().collect();
        let choice = match shared.choose(&skip, context_floor, affinity, now) {
            Err(_) if !avoid.is_empty() => shared.choose(&tried, context_floor, affinity, now),
            choice => choice,
        };
        let member = match choice {
            Ok(member) => member,
            Err(earliest) => {
                if let Some(last) = last {
                    return last;
                }
                metrics::exhausted();
                let wait_ok = earliest.is_some_and(|at| deadline.is_none_or(|d| at <= d));
                match (shared.when_exhausted, earliest) {
                    (WhenExhausted::Wait, Some(at)) if wait_ok => {
                        tokio::time::sleep_until(at).await;
                        continue;
                    }
                    _ => {
                        return Err(Box::new(NoMemberAvailable::new(
                            earliest.map(|at| at.saturating_duration_since(now)),
                        )));
                    }
                }
            }
        };
        let flight = InFlight {
            shared: &shared,
            member,
        };
        tried.push(member);
        let spec = &shared.members[member];
        let mut attempt = request.clone();
        if let Err(error) = spec.adapter.adapt(&mut attempt) {
            tracing::warn!(member = %spec.name, %error, "pool member cannot take this request");
            drop(flight);
            continue;
        }
        let started = Instant::now();
        let result = services[member]
            .clone()
            .oneshot(attempt)
            .await
            .map_err(Into::into);
        drop(flight);
        if let Err(error) = &result
            && is_deadline_expiry(error.as_ref())
        {
            // The caller's own deadline ran out: like a cancelled call, nothing to hold against
            // the member, and no time left to try another.
            return result;
        }
        let (outcome, source) = match &result {
            Ok(response) => (response_outcome(response), Source::Upstream),
            Err(error) => (classify_error(error.as_ref()), source_of(error.as_ref())),
        };
        let delivery = Delivery::of(&outcome, source != Source::Upstream);
        shared.record(member, &outcome, source, started.elapsed());
        let next = next_for(outcome.kind);
        let result = result.map(|mut response| {
            response.extensions_mut().insert(Served {
                member: spec.name.clone(),
                attempts: u32::try_from(tried.len()).unwrap_or(u32::MAX),
            });
            response
        });
        match next {
            Next::Answer => return result,
            Next::Failover | Next::LargerContext => {
                if let Some(key) = &key {
                    shared.remember(key, member);
                }
                if !Repeat::of_request(&request).allows(delivery, shared.resend_unanswered) {
                    // The member may have processed it: another would do it (and bill it)
                    // again. The caller gets this answer.
                    tracing::debug!(member = %spec.name, outcome = %outcome.kind.as_str(), "not failing over: the request may have been processed");
                    return result;
                }
                if matches!(next, Next::LargerContext) {
                    let own = spec.context_window.unwrap_or(0);
                    context_floor = Some(context_floor.map_or(own, |f| f.max(own)));
                }
                tracing::debug!(member = %spec.name, outcome = %outcome.kind.as_str(), "trying another pool member");
                shared.metrics[member].failover(outcome.kind);
                last = Some(result);
                if tried.len() >= shared.max_attempts {
                    return last.expect("an attempt was made");
                }
            }
        }
    }
}
