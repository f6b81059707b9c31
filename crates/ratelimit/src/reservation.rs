//! The reservation a request holds, as a [`Ticket`]: taken when it is admitted (at once, or
//! after waiting in line), settled with what the answer says (learned limits, a pause on a 429,
//! a refund of unused tokens when the stream ends) or the error, and given back whole when it
//! is dropped before the request was sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Response;
use tokio::time::Instant;
use tollgate_core::body::{EndOfStream, StreamEnd};
use tollgate_core::classify::{classify_error, classify_response, is_local_refusal};
use tollgate_core::error::{ExceedsLimit, RateLimited};
use tollgate_core::{BoxError, OutcomeKind, Provider, RateLimitDimension, RateLimitSnapshot};

use crate::layer::Config;
use crate::metrics::Refused;
use crate::quota::Dimension;
use crate::store::{Charges, Refusal, Store};

/// The slow path: waiting in line for capacity (boxed: only a request that waits pays for it).
pub(crate) type Line = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// The longest jitter a line of a [shared](Store::SHARED) store adds to a wait.
const MAX_JITTER: Duration = Duration::from_millis(10);

/// A random share of `wait / 8`, at most [`MAX_JITTER`]: enough to make who wins each refill a
/// draw among a fleet's lines, little enough to leave the limit used (at the limit, the first of
/// three lines asks about 1/4 of it after the refill).
fn jitter(wait: Duration) -> Duration {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let draw = std::collections::hash_map::RandomState::new()
        .hash_one(DRAWS.fetch_add(1, Ordering::Relaxed));
    let most = (wait / 8).min(MAX_JITTER);
    most.mul_f64((draw >> 11) as f64 / (1u64 << 53) as f64)
}

/// The error a refusal becomes.
pub(crate) fn refusal_error(refusal: Refusal) -> BoxError {
    match refusal {
        Refusal::Wait { dimension, wait } => Box::new(RateLimited {
            dimension: dimension.to_core(),
            retry_after: Some(wait),
        }),
        Refusal::Never {
            dimension,
            requested,
            limit,
        } => Box::new(ExceedsLimit {
            dimension: dimension.to_core(),
            requested,
            limit,
        }),
    }
}

/// A reservation in flight. Dropped before the request was sent (the caller gave up while
/// waiting, or the inner service failed to become ready), it gives everything back.
pub(crate) struct Ticket<St: Store> {
    store: St,
    scope: Arc<St::Scope>,
    charges: Charges,
    provider: Option<Provider>,
    config: Arc<Config>,
    /// When a waiting request gives up (its max wait, its deadline).
    give_up_at: Option<Instant>,
    reserved: bool,
    /// Whether the charges count in the scope's reserved units (from admission until settled).
    counted: bool,
    sent_at: Option<Instant>,
    /// When the request asked for capacity.
    asked_at: Instant,
}

impl<St: Store> Ticket<St> {
    pub(crate) fn new(
        store: St,
        scope: Arc<St::Scope>,
        charges: Charges,
        provider: Option<Provider>,
        config: Arc<Config>,
        give_up_at: Option<Instant>,
        asked_at: Instant,
    ) -> Self {
        Self {
            store,
            scope,
            charges,
            provider,
            config,
            give_up_at,
            reserved: false,
            counted: false,
            sent_at: None,
            asked_at,
        }
    }

    /// The reservation is made: it now holds the charges until settled.
    pub(crate) fn admitted(&mut self) {
        self.reserved = true;
        self.counted = true;
        let stats = St::stats(&self.scope);
        stats.admitted(self.charges);
        // The wait is timed only when metrics are on: no clock read otherwise.
        stats.metrics.admitted(self.asked_at, self.charges);
    }

    pub(crate) fn refused(&self, why: Refused) {
        St::stats(&self.scope).metrics.refused(why);
    }

    /// Waits in line, in arrival order, until the request's charges fit, or fails when that
    /// would be after `give_up_at`. Only the head of the line watches the limits: it sleeps
    /// until the capacity it needs has refilled, or until capacity is given back sooner.
    ///
    /// Waiting requests reserve nothing: capacity refunded by answers that used less than
    /// their estimate goes to the head of the line at once, instead of being held by
    /// reservations made for the future.
    pub(crate) fn wait_in_line(&self) -> Line {
        let (store, scope, charges, give_up_at) = (
            self.store.clone(),
            self.scope.clone(),
            self.charges,
            self.give_up_at,
        );
        Box::pin(async move {
            let local = St::stats(&scope);
            let head = match give_up_at {
                Some(at) => tokio::time::timeout_at(at, local.head.acquire())
                    .await
                    .map_err(|_| {
                        // Still behind others when its time ran out.
                        Box::new(RateLimited {
                            dimension: Dimension::Requests.to_core(),
                            retry_after: None,
                        }) as BoxError
                    })?,
                None => local.head.acquire().await,
            };
            let _head = head.map_err(|_| -> BoxError { "rate limiter closed".into() })?;
            loop {
                let released = local.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                match store
                    .reserve(&scope, charges, Instant::now(), std::time::Duration::ZERO)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(Refusal::Wait { dimension, wait }) => {
                        let at = Instant::now() + wait;
                        if give_up_at.is_some_and(|limit| at > limit) {
                            return Err(refusal_error(Refusal::Wait { dimension, wait }));
                        }
                        let at = if St::SHARED { at + jitter(wait) } else { at };
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            () = &mut released => {}
                        }
                    }
                    Err(refusal) => return Err(refusal_error(refusal)),
                }
            }
        })
    }

    /// The request is on its way: from now on the provider may count it.
    pub(crate) fn sent(&mut self) {
        self.sent_at = Some(Instant::now());
    }

    pub(crate) fn scope(&self) -> &Arc<St::Scope> {
        &self.scope
    }

    /// Gives `charges` back, and tells the head of the line.
    fn give_back(&self, charges: Charges) {
        if !charges.is_zero() {
            self.store.release(&self.scope, charges);
            St::stats(&self.scope).released.notify_waiters();
        }
    }

    /// Learns from the response, and settles the reservation now (a refusal) or when the body
    /// ends (a success, from the usage it reports).
    pub(crate) fn settle_response<RB>(mut self, response: &Response<RB>) {
        let now = Instant::now();
        let extensions = response.extensions();
        let outcome = extensions
            .get::<tollgate_core::Outcome>()
            .cloned()
            .unwrap_or_else(|| {
                classify_response(
                    response.status(),
                    response.headers(),
                    &[],
                    SystemTime::now(),
                )
            });
        if self.config.header_sync {
            let mut snapshot = extensions
                .get::<RateLimitSnapshot>()
                .cloned()
                .unwrap_or_else(|| {
                    RateLimitSnapshot::from_headers(
                        response.headers(),
                        self.provider,
                        SystemTime::now(),
                    )
                });
            snapshot.sent_at = snapshot.sent_at.or(self.sent_at);
            if !snapshot.is_empty() {
                self.store
                    .observe(&self.scope, &snapshot, self.config.learn, now);
            }
        }
        match outcome.kind {
            OutcomeKind::Success => {
                if self.config.learn {
                    self.store.answered(&self.scope, self.charges, now);
                }
                if let Some(end) = extensions.get::<EndOfStream>() {
                    let store = self.store.clone();
                    let scope = self.scope.clone();
                    let (reserved, provider) = (self.charges, self.provider);
                    // Settled when the body ends (or is dropped): it counts as reserved until then.
                    let counted = std::mem::take(&mut self.counted);
                    end.on_end(move |end| {
                        reconcile(&store, &scope, reserved, provider, end);
                        if counted {
                            St::stats(&scope).settled(reserved);
                        }
                    });
                }
            }
            OutcomeKind::RateLimited(dimension) => {
                // A limit nobody configured and no header reported is learned from this: a 429
                // that names no limit is taken as the requests limit.
                let learned = match dimension {
                    RateLimitDimension::Unknown => &[Dimension::Requests][..],
                    named => Dimension::from_core(named),
                };
                if self.config.learn {
                    self.store.refused(
                        &self.scope,
                        learned,
                        outcome.rate_limit_window,
                        outcome.retry_after,
                        self.sent_at.unwrap_or(now),
                        now,
                    );
                }
                if let Some(wait) = outcome.retry_after {
                    tracing::debug!(%dimension, ?wait, "provider rate limit: pausing the scope");
                    St::stats(&self.scope).metrics.paused();
                    let dimensions = Dimension::from_core(dimension);
                    self.store
                        .pause(&self.scope, dimensions, now + wait, self.charges);
                }
                self.give_back(self.charges.tokens_only());
            }
            // A refused request used no tokens; its request still counts, as providers count it.
            _ => self.give_back(self.charges.tokens_only()),
        }
        self.reserved = false;
    }

    /// A request that failed without a response: if it never left — a layer below refused it
    /// (a lower limit, a breaker, a queue given up) or no connection was made — nothing was
    /// used. Otherwise the provider may have counted it, and the reservation stands.
    pub(crate) fn settle_error(mut self, error: &(dyn std::error::Error + Send + Sync + 'static)) {
        if is_local_refusal(error) || classify_error(error).kind == OutcomeKind::ConnectError {
            self.give_back(self.charges);
        }
        self.reserved = false;
    }
}

/// Settles a successful request with the usage its body reported: refunds the estimate's
/// excess, charges its shortfall, and feeds the scope's estimate counters.
fn reconcile<St: Store>(
    store: &St,
    scope: &St::Scope,
    reserved: Charges,
    provider: Option<Provider>,
    end: &StreamEnd,
) {
    let Some(usage) = end.usage else {
        // No usage reported: keep the reservation, the provider may well have counted it.
        return;
    };
    // Anthropic does not count prompt-cache reads against its input-token limit.
    let counted_input = match provider {
        Some(Provider::Anthropic) => usage
            .input_tokens
            .saturating_sub(usage.cache_read_input_tokens),
        _ => usage.input_tokens,
    };
    let used = Charges::request(counted_input, usage.output_tokens).tokens_only();
    let held = reserved.tokens_only();
    let refund = held.saturating_sub(used);
    if !refund.is_zero() {
        store.release(scope, refund);
        St::stats(scope).released.notify_waiters();
    }
    store.charge(scope, used.saturating_sub(held));
    St::stats(scope).metrics.used(used);
    St::stats(scope).record(
        held.get(Dimension::Tokens),
        used.get(Dimension::Tokens),
        usage.output_tokens,
    );
}

impl<St: Store> Drop for Ticket<St> {
    fn drop(&mut self) {
        if self.reserved && self.sent_at.is_none() {
            self.give_back(self.charges);
        }
        // Settled: by its answer, its error, or the caller walking away.
        if self.counted {
            St::stats(&self.scope).settled(self.charges);
        }
    }
}
