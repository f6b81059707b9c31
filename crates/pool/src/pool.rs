//! [`Pool`]: routes each request to a member, fails over, falls back, and keeps score.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use rand::RngExt as _;
use tokio::time::Instant;
use tollgate_core::classify::{
    classify_error, is_deadline_expiry, is_local_refusal, response_outcome,
};
use tollgate_core::error::{CircuitOpen, RateLimited};
use tollgate_core::{
    BoxError, Deadline, Delivery, Outcome, OutcomeKind, RateLimitDimension, Repeat,
};
use tower::{Service, ServiceExt};

use crate::health::{Cooldowns, Counters, Health, MemberState, Reason, Source};
use crate::member::Member;
use crate::metrics::{self, MemberMetrics};

/// How the pool picks among the members it may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// The highest health score (scores within 10 points of the best count as equal); among
    /// those the least loaded, then in turn (default).
    #[default]
    Healthiest,
    /// Power of two choices: of two members drawn at random, the one with fewer calls in
    /// flight.
    LeastLoaded,
    /// At random, in proportion to the members' weights.
    Weighted,
    /// The first member, in the order they were added, that may serve.
    Ordered,
}

/// What a request does when no member may serve it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenExhausted {
    /// Waits until the earliest member is back, unless that is past the request's
    /// [`Deadline`] (default).
    #[default]
    Wait,
    /// Fails at once with [`RateLimited`] and the wait until the earliest member is back.
    Fail,
}

/// Which member answered, in the response's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The member's name.
    pub member: Arc<str>,
    /// Members tried for this request, the one that answered included.
    pub attempts: u32,
}

/// One member at a glance.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberReport {
    /// Its name.
    pub name: Arc<str>,
    /// Its tier.
    pub tier: u32,
    /// Its 0–100 health score (0 while out of rotation).
    pub score: u8,
    /// In rotation, cooling down, or parked.
    pub state: MemberState,
    /// Its calls in flight.
    pub in_flight: usize,
    /// What happened to it.
    pub counters: Counters,
}

/// Scores this close to the best count as the best.
const HEALTHY_BAND: u8 = 10;

/// How long the pool remembers which members failed a request, for its retries.
const REMEMBER: Duration = Duration::from_secs(60);
/// Requests remembered at most.
const REMEMBERED: usize = 10_000;

pub(crate) struct Shared {
    members: Vec<Member>,
    health: Mutex<Vec<Health>>,
    policy: Policy,
    cooldowns: Cooldowns,
    when_exhausted: WhenExhausted,
    max_attempts: usize,
    resend_unanswered: bool,
    turn: AtomicUsize,
    /// Members that failed a request, by its idempotency key, so its retries go elsewhere.
    failed: Mutex<HashMap<String, (Instant, Vec<usize>)>>,
    idempotency_header: http::HeaderName,
    metrics: Vec<MemberMetrics>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("members", &self.members)
            .field("policy", &self.policy)
            .field("cooldowns", &self.cooldowns)
            .field("when_exhausted", &self.when_exhausted)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, Vec<Health>> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn best_latency(health: &[Health]) -> Option<f64> {
        health
            .iter()
            .filter_map(|h| h.latency)
            .min_by(f64::total_cmp)
    }

    /// Picks a member not in `skip`, counting it in flight; or the earliest moment one of
    /// them is back.
    fn choose(
        &self,
        skip: &[usize],
        context_floor: Option<u64>,
        now: Instant,
    ) -> Result<usize, Option<Instant>> {
        let mut health = self.health();
        let best = Self::best_latency(&health);
        let eligible = |i: usize| {
            !skip.contains(&i)
                && context_floor
                    .is_none_or(|floor| self.members[i].context_window.is_some_and(|w| w > floor))
        };
        let mut candidates: Vec<(usize, u8)> = Vec::new();
        let mut tier = u32::MAX;
        let mut earliest: Option<Instant> = None;
        for i in 0..self.members.len() {
            if !eligible(i) {
                continue;
            }
            match health[i].state(now) {
                MemberState::Available => {
                    let member_tier = self.members[i].tier;
                    if member_tier < tier {
                        tier = member_tier;
                        candidates.clear();
                    }
                    if member_tier == tier {
                        candidates.push((i, health[i].score(now, best)));
                    }
                }
                MemberState::CoolingDown { .. } => {
                    if let Some(back) = health[i].back_at() {
                        earliest = Some(earliest.map_or(back, |e| e.min(back)));
                    }
                }
                MemberState::Parked { .. } => {}
            }
        }
        if candidates.is_empty() {
            return Err(earliest);
        }
        let pick = match self.policy {
            Policy::Ordered => candidates[0].0,
            Policy::Healthiest => {
                // Scores within a band of the best count as equal, so a member a few points
                // behind is not starved; among those, the least loaded, then in turn.
                let top = candidates.iter().map(|(_, s)| *s).max().unwrap_or(0);
                let healthy = |s: u8| s.saturating_add(HEALTHY_BAND) >= top;
                let least = candidates
                    .iter()
                    .filter(|(_, s)| healthy(*s))
                    .map(|(i, _)| health[*i].in_flight)
                    .min()
                    .unwrap_or(0);
                let tied: Vec<usize> = candidates
                    .iter()
                    .filter(|(i, s)| healthy(*s) && health[*i].in_flight == least)
                    .map(|(i, _)| *i)
                    .collect();
                // In turn: the first tied member at or after a cursor that moves one member
                // per pick (a cursor into `tied` itself would skip members in step with it).
                let n = self.members.len();
                let cursor = self.turn.fetch_add(1, Ordering::Relaxed) % n;
                *tied
                    .iter()
                    .min_by_key(|i| (**i + n - cursor) % n)
                    .expect("a tied member")
            }
            Policy::LeastLoaded => {
                let mut rng = rand::rng();
                let a = candidates[rng.random_range(0..candidates.len())].0;
                let b = candidates[rng.random_range(0..candidates.len())].0;
                if health[b].in_flight < health[a].in_flight {
                    b
                } else {
                    a
                }
            }
            Policy::Weighted => {
                let total: u64 = candidates
                    .iter()
                    .map(|(i, _)| u64::from(self.members[*i].weight))
                    .sum();
                let mut ticket = rand::rng().random_range(0..total.max(1));
                let mut pick = candidates[0].0;
                for (i, _) in &candidates {
                    let weight = u64::from(self.members[*i].weight);
                    if ticket < weight {
                        pick = *i;
                        break;
                    }
                    ticket -= weight;
                }
                pick
            }
        };
        health[pick].in_flight += 1;
        Ok(pick)
    }

    fn finish(&self, member: usize) {
        let mut health = self.health();
        health[member].in_flight = health[member].in_flight.saturating_sub(1);
    }

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

    fn remembered(&self, key: &str) -> Vec<usize> {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match failed.get(key) {
            Some((at, members)) if at.elapsed() < REMEMBER => members.clone(),
            Some(_) => {
                failed.remove(key);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn remember(&self, key: &str, member: usize) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.len() >= REMEMBERED {
            failed.retain(|_, (at, _)| at.elapsed() < REMEMBER);
            if failed.len() >= REMEMBERED {
                failed.clear();
            }
        }
        let entry = failed
            .entry(key.to_owned())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        entry.0 = Instant::now();
        if !entry.1.contains(&member) {
            entry.1.push(member);
        }
    }

    pub(crate) fn report(&self) -> Vec<MemberReport> {
        let now = Instant::now();
        let mut health = self.health();
        let best = Self::best_latency(&health);
        self.members
            .iter()
            .zip(health.iter_mut())
            .map(|(member, health)| MemberReport {
                name: member.name.clone(),
                tier: member.tier,
                score: health.score(now, best),
                state: health.state(now),
                in_flight: health.in_flight,
                counters: health.counters,
            })
            .collect()
    }

    pub(crate) fn reset(&self, name: &str) -> bool {
        let mut health = self.health();
        let mut found = false;
        for (member, health) in self.members.iter().zip(health.iter_mut()) {
            if &*member.name == name {
                health.reset();
                found = true;
            }
        }
        found
    }

    pub(crate) fn reset_all(&self) {
        for health in self.health().iter_mut() {
            health.reset();
        }
    }
}

/// Counts a member's call in flight until dropped.
struct InFlight<'a> {
    shared: &'a Shared,
    member: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.finish(self.member);
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

/// A pool of members: routes, fails over, falls back; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share the members' health: one view of them for every clone.
pub struct Pool<S> {
    services: Arc<[S]>,
    pub(crate) shared: Arc<Shared>,
}

impl<S> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Self {
            services: self.services.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

/// Builds a [`Pool`].
pub struct PoolBuilder<S> {
    members: Vec<(Member, S)>,
    policy: Policy,
    cooldowns: Cooldowns,
    when_exhausted: WhenExhausted,
    max_attempts: Option<usize>,
    resend_unanswered: bool,
}

impl<S> fmt::Debug for PoolBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field(
                "members",
                &self.members.iter().map(|(m, _)| m).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> Default for PoolBuilder<S> {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            policy: Policy::default(),
            cooldowns: Cooldowns::default(),
            when_exhausted: WhenExhausted::default(),
            max_attempts: None,
            resend_unanswered: false,
        }
    }
}

impl<S> PoolBuilder<S> {
    /// Adds a member, served by `service` (its own stack: breaker, limiter, client).
    pub fn member(mut self, member: Member, service: S) -> Self {
        self.members.push((member, service));
        self
    }

    /// How members are picked (default: healthiest).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How long each outcome takes a member out of rotation.
    pub fn cooldowns(mut self, cooldowns: Cooldowns) -> Self {
        self.cooldowns = cooldowns;
        self
    }

    /// What a request does when no member may serve it (default: wait).
    pub fn when_exhausted(mut self, when: WhenExhausted) -> Self {
        self.when_exhausted = when;
        self
    }

    /// Members tried per request at most (default: all of them).
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Whether a billed request (generation, embeddings) whose connection to a member broke
    /// after it may have been sent ([`ConnectionLost`](OutcomeKind::ConnectionLost)) fails
    /// over to another member (default `false`: the first member may have processed it, and a
    /// second would bill it again). Uploads, batch creations and unknown `POST`s never fail
    /// over after such a failure; reads always do. See [`Repeat`].
    pub fn resend_unanswered(mut self, resend: bool) -> Self {
        self.resend_unanswered = resend;
        self
    }

    /// The pool.
    ///
    /// # Panics
    ///
    /// Without members, or with two of the same name.
    pub fn build(self) -> Pool<S> {
        assert!(!self.members.is_empty(), "a pool needs a member");
        let (members, services): (Vec<Member>, Vec<S>) = self.members.into_iter().unzip();
        for (i, member) in members.iter().enumerate() {
            assert!(
                !members[..i].iter().any(|m| m.name == member.name),
                "two pool members are named {:?}",
                member.name
            );
        }
        let max_attempts = self.max_attempts.unwrap_or(members.len());
        let metrics = members
            .iter()
            .map(|m| MemberMetrics::new(&m.name))
            .collect();
        Pool {
            services: services.into(),
            shared: Arc::new(Shared {
                health: Mutex::new(members.iter().map(|_| Health::default()).collect()),
                members,
                policy: self.policy,
                cooldowns: self.cooldowns,
                when_exhausted: self.when_exhausted,
                max_attempts,
                resend_unanswered: self.resend_unanswered,
                turn: AtomicUsize::new(0),
                failed: Mutex::new(HashMap::new()),
                idempotency_header: http::HeaderName::from_static("idempotency-key"),
                metrics,
            }),
        }
    }
}

impl<S> Pool<S> {
    /// An empty builder.
    pub fn builder() -> PoolBuilder<S> {
        PoolBuilder::default()
    }

    /// A handle for reports and resets.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            shared: self.shared.clone(),
        }
    }
}

/// Reads and resets the members' health.
#[derive(Clone, Debug)]
pub struct PoolHandle {
    shared: Arc<Shared>,
}

impl PoolHandle {
    /// Every member at a glance, in the order they were added.
    pub fn snapshot(&self) -> Vec<MemberReport> {
        self.shared.report()
    }

    /// Puts a member back in rotation (a rotated key, a raised quota); `false` when no member
    /// has that name.
    pub fn reset(&self, name: &str) -> bool {
        self.shared.reset(name)
    }

    /// Puts every member back in rotation.
    pub fn reset_all(&self) {
        self.shared.reset_all();
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
        let choice = match shared.choose(&skip, context_floor, now) {
            Err(_) if !avoid.is_empty() => shared.choose(&tried, context_floor, now),
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
                        return Err(Box::new(RateLimited {
                            dimension: RateLimitDimension::Requests,
                            retry_after: earliest.map(|at| at.saturating_duration_since(now)),
                        }));
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
