//! Fixed windows: a share of the quota per window, all of it back when the next one starts.

use std::time::Duration;

use tokio::time::Instant;

use super::MeterView;

/// Allows `limit` per fixed window of `window`, the windows counted from the key's start
/// (Azure OpenAI enforces RPM over 1 s or 10 s windows this way).
#[derive(Clone, Debug)]
pub(super) struct FixedWindow {
    limit: u64,
    window: Duration,
    started: Instant,
    used: u64,
}

impl FixedWindow {
    /// Windows of `window`, each allowing `limit`.
    pub(super) fn new(limit: u64, window: Duration, now: Instant) -> Self {
        Self {
            limit,
            window,
            started: now,
            used: 0,
        }
    }

    fn refresh(&mut self, now: Instant) {
        if now >= self.started + self.window {
            let windows =
                now.duration_since(self.started).as_nanos() / self.window.as_nanos().max(1);
            self.started += self.window * u32::try_from(windows).unwrap_or(u32::MAX);
            self.used = 0;
        }
    }

    pub(super) fn ceiling(&self) -> u64 {
        self.limit
    }

    pub(super) fn wait_for(&mut self, amount: u64, now: Instant) -> Option<Duration> {
        self.refresh(now);
        (self.used + amount > self.limit)
            .then(|| (self.started + self.window).saturating_duration_since(now))
    }

    pub(super) fn take(&mut self, amount: u64) {
        self.used += amount;
    }

    pub(super) fn give_back(&mut self, amount: u64, now: Instant) {
        self.refresh(now);
        self.used = self.used.saturating_sub(amount);
    }

    pub(super) fn view(&mut self, limit: u64, now: Instant) -> MeterView {
        self.refresh(now);
        MeterView {
            limit,
            remaining: self.limit.saturating_sub(self.used),
            reset: if self.used == 0 {
                Duration::ZERO
            } else {
                (self.started + self.window).saturating_duration_since(now)
            },
        }
    }
}
