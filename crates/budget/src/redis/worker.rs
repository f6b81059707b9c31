//! The background task of a fleet's books: it sends settlements, renews the reservations of
//! calls in flight and probes Redis while it is unreachable. Also the guard every Redis
//! command runs under, and the books' health.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use ::redis::RedisResult;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_core::BoxError;

use super::fleet::Fleet;
use super::{CONNECTION_TIMEOUT, Link, open};

/// Whether Redis answers, and when to try it again if not.
#[derive(Debug, Default)]
pub(super) struct Health {
    degraded: AtomicBool,
    next_probe: Mutex<Option<Instant>>,
    /// Counts outages, so that each set of books starts its local books once per outage.
    outages: std::sync::atomic::AtomicU64,
}

impl Health {
    pub(super) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// The outage under way (or the last one).
    pub(super) fn outage(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// Redis failed: local books (or refusals) until a probe after `retry` finds it again.
    /// The warning is given once per outage.
    pub(super) fn failed(&self, error: &dyn fmt::Display, retry: Duration, fail_open: bool) {
        *self
            .next_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + retry);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::AcqRel);
            if fail_open {
                tracing::warn!(%error, "redis unreachable: budgets kept by this process, within its local share, until it answers");
            } else {
                tracing::warn!(%error, "redis unreachable: refusing budgeted calls until it answers (fail-closed)");
            }
        }
    }

    fn due(&self) -> bool {
        self.is_degraded()
            && self
                .next_probe
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none_or(|at| at <= Instant::now())
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("redis answers again: back to the fleet's budgets");
        }
    }
}

/// Runs one Redis command, failing it after `timeout` of wall-clock time.
///
/// The timeout is a parked blocking-pool thread, not a tokio timer: a round trip takes real
/// time even when tokio's clock is paused (tests), where a timer would fire as soon as every
/// task waits. While that thread waits, a paused clock does not auto-advance either, so in
/// tests a round trip takes no simulated time.
pub(super) async fn guarded<T>(
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

/// How long the task lets settlements gather before sending them together.
const LINGER: Duration = Duration::from_millis(2);

/// The task: one per set of books, holding them weakly; it ends with them.
pub(super) async fn run(fleet: Weak<Fleet>, wake: Arc<Notify>) {
    let mut renewed = Instant::now();
    loop {
        let Some(tick) = fleet.upgrade().map(|f| f.link.settings().tick()) else {
            return;
        };
        if tokio::time::timeout(tick, wake.notified()).await.is_ok() {
            tokio::time::sleep(LINGER).await;
        }
        let Some(fleet) = fleet.upgrade() else {
            return;
        };
        let health = &fleet.link.health;
        if health.is_degraded() {
            if health.due() && probe(&fleet.link).await && fleet.sync(true, true).await.is_ok() {
                renewed = Instant::now();
                health.recovered();
            }
            continue;
        }
        let renew = renewed.elapsed() >= fleet.link.settings().renew_every();
        if renew || fleet.has_unsent() {
            let sent = fleet.sync(renew, false).await.is_ok();
            if sent && renew {
                renewed = Instant::now();
            }
        }
    }
}

/// Whether Redis answers again, on a fresh connection (the old one may still be waiting on a
/// command sent to a Redis that stopped); if so, the fresh connection replaces it.
async fn probe(link: &Link) -> bool {
    let fresh = async {
        let mut conn = open(&link.client).await?;
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await?;
        Ok(conn)
    };
    match guarded(CONNECTION_TIMEOUT, fresh).await {
        Ok(conn) => {
            *link.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
            true
        }
        Err(error) => {
            let settings = link.settings();
            link.health
                .failed(&*error, settings.retry_interval, settings.fail_open);
            false
        }
    }
}
