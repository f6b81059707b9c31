//! The store's background task: it sends the releases, charges, provider counts and pauses no
//! reservation carried, gives back leases that outlived their hold, and probes Redis while it
//! is unreachable. Also the guard every Redis command runs under.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use redis::RedisResult;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_core::BoxError;

use super::cell::Cell;
use super::clock::Frame;
use super::scope::RedisScope;
use super::script::{self, Change};
use super::{CONNECTION_TIMEOUT, Shared, open};

/// Whether Redis answers, and when to try it again if not.
#[derive(Debug, Default)]
pub(crate) struct Health {
    degraded: AtomicBool,
    /// Local nanoseconds of the next probe.
    next_probe: AtomicU64,
}

impl Health {
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Redis failed at `now`: local limits until a probe at `retry_at` finds it again.
    /// Whether this failure switched to local limits.
    pub(crate) fn failed(&self, error: &dyn fmt::Display, retry_at: u64, fail_open: bool) -> bool {
        self.next_probe.store(retry_at, Ordering::Release);
        let switched = !self.degraded.swap(true, Ordering::AcqRel);
        if switched {
            if fail_open {
                tracing::warn!(%error, "redis unreachable: rate limiting with this process's local share of each quota until it answers");
            } else {
                tracing::warn!(%error, "redis unreachable: refusing rate-limited requests until it answers (fail-closed)");
            }
        }
        switched
    }

    fn due(&self, now: u64) -> bool {
        self.is_degraded() && self.next_probe.load(Ordering::Acquire) <= now
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("redis answers again: back to the fleet's shared limits");
        }
    }
}

/// Runs one Redis command, failing it after `timeout` of wall-clock time.
///
/// The timeout is a parked blocking-pool thread, not a tokio timer: a network round trip takes
/// real time even when tokio's clock is paused (tests), where a timer would fire as soon as
/// every task waits. While that thread waits, a paused clock does not auto-advance either, so
/// in tests a round trip to Redis takes no simulated time at all. It costs a thread hand-off
/// per round trip, which the leases make rare.
pub(crate) async fn guarded<T>(
    timeout: Duration,
    command: impl Future<Output = RedisResult<T>>,
) -> Result<T, BoxError> {
    let (_done, done_rx) = std::sync::mpsc::channel::<()>();
    let mut watchdog = Some(tokio::task::spawn_blocking(move || {
        done_rx.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout)
    }));
    let mut command = pin!(command);
    poll_fn(|cx| {
        if let Poll::Ready(result) = command.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(BoxError::from));
        }
        if let Some(handle) = watchdog.as_mut()
            && let Poll::Ready(fired) = Pin::new(handle).poll(cx)
        {
            watchdog = None;
            if fired.unwrap_or(false) {
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("redis did not answer within {timeout:?}"),
                );
                return Poll::Ready(Err(error.into()));
            }
        }
        Poll::Pending
    })
    .await
}

/// Most changes one script call carries.
pub(crate) const MAX_CHANGES: usize = 512;

/// How long the worker lets changes gather, so that a reservation can carry them instead.
const LINGER: Duration = Duration::from_millis(5);

/// The worker: one per store, holding it weakly; it ends with the store.
pub(crate) async fn run(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let Some(tick) = shared.upgrade().map(|s| s.settings().tick()) else {
            return;
        };
        if tokio::time::timeout(tick, wake.notified()).await.is_ok() {
            tokio::time::sleep(LINGER).await;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = shared.clock.local(Instant::now());
        shared.reap(now);
        for scope in shared.scopes_to_send(false) {
            shared.send(&scope).await;
        }
        shared.send_leftovers().await;
        if shared.health.due(now) {
            shared.probe().await;
        }
    }
}

impl Shared {
    /// Leases past their hold go back to Redis.
    fn reap(&self, now: u64) {
        self.scopes.load().for_each(|_, scope| {
            for (dimension, cell) in scope.cells() {
                let units = cell.drain_expired(now);
                if units > 0 {
                    scope.push(dimension, Change::Add(-(units as i64)));
                }
            }
        });
    }

    /// The scopes with changes to send (`all`: every scope).
    pub(super) fn scopes_to_send(&self, all: bool) -> Vec<Arc<RedisScope>> {
        let mut out = Vec::new();
        self.scopes.load().for_each(|_, scope| {
            if all || scope.has_pending() {
                out.push(scope.clone());
            }
        });
        out
    }

    /// Sends the changes of scopes that were let go of with some unsent (their leftovers).
    pub(super) async fn send_leftovers(&self) {
        loop {
            let taken = self.leftovers.take(MAX_CHANGES);
            if taken.is_empty() {
                return;
            }
            let changes: Vec<(&Cell, Change)> = taken
                .iter()
                .map(|(cell, change)| (&**cell, *change))
                .collect();
            if !self.send_changes(&changes).await {
                return;
            }
        }
    }

    /// Sends the changes queued for `scope`, in its turn.
    pub(super) async fn send(&self, scope: &RedisScope) {
        let _turn = scope.turn.lock().await;
        loop {
            let changes = scope.take_pending(MAX_CHANGES);
            if changes.is_empty() || !self.send_changes(&changes).await {
                return;
            }
        }
    }

    /// Sends `changes` alone; false when Redis did not take them (they are dropped: while Redis
    /// is unreachable, changes stay local).
    pub(super) async fn send_changes(&self, changes: &[(&Cell, Change)]) -> bool {
        if self.health.is_degraded() {
            return false;
        }
        let frame = self.clock.frame(Instant::now());
        let mut conn = self.conn();
        self.update_trips.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings().command_timeout;
        let call = script::apply(&mut conn, &frame, changes, &[], Duration::ZERO);
        match guarded(timeout, call).await {
            Ok(applied) => {
                self.seen(&frame, changes, &applied.changed);
                true
            }
            Err(error) => {
                self.failed(&*error);
                false
            }
        }
    }

    /// Records the TATs Redis reported for `changes`.
    pub(super) fn seen(&self, frame: &Frame, changes: &[(&Cell, Change)], tats: &[i64]) {
        for ((cell, _), tat) in changes.iter().zip(tats) {
            cell.seen(self.clock.local(frame.instant(*tat)));
        }
    }

    /// Asks Redis whether it answers again, on a fresh connection (the old one may still be
    /// waiting on a reconnection attempt of its own).
    async fn probe(&self) {
        let fresh = async {
            let mut conn = open(&self.client).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok(conn)
        };
        match guarded(CONNECTION_TIMEOUT, fresh).await {
            Ok(conn) => {
                *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
                // Redis may have lost its keys: forget what it said before.
                self.scopes.load().for_each(|_, scope| {
                    for (_, cell) in scope.cells() {
                        cell.seen(0);
                    }
                });
                self.health.recovered();
            }
            Err(error) => self.failed(&*error),
        }
    }
}
