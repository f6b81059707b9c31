//! Reservations against Redis: from the lease when it can, with a round trip when it must, and
//! from the local fallback while Redis is unreachable.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate_core::redis::guarded;

use super::Shared;
use super::scope::RedisScope;
use super::script::{self, Reserved};
use super::worker::MAX_CHANGES;
use crate::quota::Dimension;
use crate::store::{Charges, Refusal};

/// The future of a [`RedisStore`](super::RedisStore) reservation: ready at once when the lease
/// (or the local fallback) decides, a round trip to Redis otherwise.
///
/// The round trip runs as a task of its own: a caller that gives up does not cut it short, so
/// what Redis granted (a lease) is still recorded.
pub struct RedisReserve {
    state: ReserveState,
}

enum ReserveState {
    Ready(Option<Result<Instant, Refusal>>),
    Remote(JoinHandle<Result<Instant, Refusal>>),
}

impl Future for RedisReserve {
    type Output = Result<Instant, Refusal>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            ReserveState::Ready(result) => {
                Poll::Ready(result.take().expect("RedisReserve polled after completion"))
            }
            ReserveState::Remote(task) => Poll::Ready(match ready!(Pin::new(task).poll(cx)) {
                Ok(reserved) => reserved,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // The runtime is shutting down.
                Err(_) => Err(Refusal::Wait {
                    dimension: Dimension::Requests,
                    wait: Duration::from_secs(1),
                }),
            }),
        }
    }
}

impl fmt::Debug for RedisReserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ReserveState::Ready(_) => "ready",
            ReserveState::Remote(_) => "asking redis",
        };
        f.debug_tuple("RedisReserve").field(&state).finish()
    }
}

impl Shared {
    pub(super) fn reserve(
        self: &Arc<Self>,
        scope: &Arc<RedisScope>,
        charges: Charges,
        now: Instant,
        max_wait: Duration,
    ) -> RedisReserve {
        let ready = |result| RedisReserve {
            state: ReserveState::Ready(Some(result)),
        };
        if self.health.is_degraded() {
            return ready(self.local_reserve(scope, charges, now, max_wait));
        }
        // Dimensions paced by what this process learned from refusals wait here first; the
        // rest is the fleet's, in Redis. A refusal there gives the local part back.
        let learned = scope.learned_only(charges);
        let paced = if learned.is_zero() {
            now
        } else {
            match scope.fallback().reserve(learned, now, max_wait) {
                Ok(at) => at,
                Err(refusal) => return ready(Err(refusal)),
            }
        };
        let both = move |scope: &RedisScope, fleet: Result<Instant, Refusal>| match fleet {
            Ok(at) => Ok(at.max(paced)),
            Err(refusal) => {
                scope.fallback().release(learned);
                Err(refusal)
            }
        };
        if let Some(decided) = scope.take(charges, self.clock.local(now)) {
            return ready(both(scope, decided.map(|()| now)));
        }
        let (shared, scope) = (self.clone(), scope.clone());
        let task = tokio::spawn(async move {
            let fleet = shared.reserve_remote(&scope, charges, now, max_wait).await;
            both(&scope, fleet)
        });
        RedisReserve {
            state: ReserveState::Remote(task),
        }
    }

    /// The slow path: in the scope's turn, with the changes queued before it.
    async fn reserve_remote(
        &self,
        scope: &RedisScope,
        charges: Charges,
        asked: Instant,
        max_wait: Duration,
    ) -> Result<Instant, Refusal> {
        let _turn = scope.turn.lock().await;
        let now = Instant::now().max(asked);
        let max_wait = max_wait.saturating_sub(now - asked);
        let local_now = self.clock.local(now);
        if self.health.is_degraded() {
            return self.local_reserve(scope, charges, now, max_wait);
        }
        if let Some(decided) = scope.take(charges, local_now) {
            // The refill before this one left enough.
            return decided.map(|()| now);
        }
        let local = |at| self.clock.local(at);
        if let Some(refusal) = scope.expected_refusal(charges, local_now, max_wait, local) {
            // Redis said so a moment ago, and nothing this process did since changes it.
            return Err(refusal);
        }
        // A refund queued before this ask reaches the fleet with it.
        let mut changes = scope.take_pending(MAX_CHANGES);
        while scope.has_pending() {
            if !self.send_changes(&changes).await {
                return self.local_reserve(scope, charges, now, max_wait);
            }
            changes = scope.take_pending(MAX_CHANGES);
        }
        let asks = scope.asks(charges);
        let frame = self.clock.frame(now);
        let mut conn = self.conn.get();
        self.reservation_trips.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings().command_timeout;
        let call = script::apply(&mut conn, &frame, &changes, &asks, max_wait);
        let reserved = match guarded(timeout, call).await {
            Ok(applied) => {
                self.seen(&frame, &changes, &applied.changed);
                for (ask, (extra, tat)) in asks.iter().zip(applied.asked) {
                    ask.cell.grant(extra, local_now);
                    ask.cell.seen(self.clock.local(frame.instant(tat)));
                }
                applied.reserved
            }
            Err(error) => {
                RedisScope::restore(&asks);
                self.failed(&*error);
                return self.local_reserve(scope, charges, now, max_wait);
            }
        };
        let dimension_of = |i: usize| asks.get(i).map_or(Dimension::Requests, |ask| ask.dimension);
        match reserved {
            Reserved::Granted(wait) => Ok(now + Duration::from_nanos(wait)),
            Reserved::Wait(i, wait) => {
                RedisScope::restore(&asks);
                Err(Refusal::Wait {
                    dimension: dimension_of(i),
                    wait: Duration::from_nanos(wait),
                })
            }
            Reserved::Never(i) => {
                RedisScope::restore(&asks);
                let dimension = dimension_of(i);
                Err(Refusal::Never {
                    dimension,
                    requested: charges.get(dimension),
                    limit: scope.cell(dimension).map_or(0, |cell| cell.quota.limit()),
                })
            }
        }
    }

    /// While Redis is unreachable: the local share of each quota (fail-open), or a refusal to
    /// wait until the next probe (fail-closed).
    fn local_reserve(
        &self,
        scope: &RedisScope,
        charges: Charges,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Instant, Refusal> {
        let settings = self.settings();
        if settings.fail_open {
            return scope.fallback().reserve(charges, now, max_wait);
        }
        match scope
            .cells()
            .find(|(dimension, _)| charges.get(*dimension) > 0)
        {
            Some((dimension, _)) => Err(Refusal::Wait {
                dimension,
                wait: settings.retry_interval,
            }),
            // Nothing limited is asked: there is nothing to protect.
            None => Ok(now),
        }
    }
}
