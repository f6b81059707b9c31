//! The background task of a fleet's books: it sends settlements, renews the reservations of
//! calls in flight and probes Redis while it is unreachable. Also what the books say when
//! Redis goes away and comes back.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Link;
use super::fleet::Fleet;

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
            if health.is_probe_due(Instant::now())
                // A fresh connection, which replaces the old one once Redis answers.
                && (fleet.link.conn.reconnect().await)
                    .map_err(|e| fleet.link.failed(&*e))
                    .is_ok()
                && fleet.sync(true, true).await.is_ok()
            {
                renewed = Instant::now();
                if health.recovered() {
                    tracing::info!("redis answers again: back to the fleet's budgets");
                }
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

impl Link {
    /// A command failed: local books (or refusals) until a probe finds Redis again; the
    /// warning is given once per outage.
    pub(super) fn failed(&self, error: &dyn fmt::Display) {
        let settings = self.settings();
        if self.health.failed(settings.retry_interval) {
            if settings.fail_open {
                tracing::warn!(%error, "redis unreachable: budgets kept by this process, within its local share, until it answers");
            } else {
                tracing::warn!(%error, "redis unreachable: refusing budgeted calls until it answers (fail-closed)");
            }
        }
    }
}
