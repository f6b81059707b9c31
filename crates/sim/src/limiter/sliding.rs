//! The sliding window, counted exactly: a log of what was admitted over the last window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::MeterView;

/// Allows at most `limit` in any trailing window of `window`.
///
/// The log holds one entry per admission instant with what was taken then (never zero), so it
/// never holds more than `limit` entries however fast the requests come.
#[derive(Clone, Debug)]
pub(super) struct SlidingWindow {
    limit: u64,
    window: Duration,
    /// The sum of the log's units.
    used: u64,
    /// (admitted at, units), oldest first.
    log: VecDeque<(Instant, u64)>,
}

impl SlidingWindow {
    /// At most `limit` in any trailing `window`.
    pub(super) fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit,
            window,
            used: 0,
            log: VecDeque::new(),
        }
    }

    /// Forgets what left the window ending at `now`.
    fn refresh(&mut self, now: Instant) {
        while let Some(&(at, units)) = self.log.front()
            && at + self.window <= now
        {
            self.used -= units;
            self.log.pop_front();
        }
    }

    pub(super) fn ceiling(&self) -> u64 {
        self.limit
    }

    /// Until enough of the oldest admissions have left the window for `amount` to fit.
    pub(super) fn wait_for(&mut self, amount: u64, now: Instant) -> Option<Duration> {
        self.refresh(now);
        let excess = self.used.saturating_add(amount).checked_sub(self.limit)?;
        if excess == 0 {
            return None;
        }
        let mut freed = 0;
        for &(at, units) in &self.log {
            freed += units;
            if freed >= excess {
                return Some((at + self.window).saturating_duration_since(now));
            }
        }
        // More than the whole window allows: it never fits.
        Some(Duration::MAX)
    }

    pub(super) fn take(&mut self, amount: u64, now: Instant) {
        if amount == 0 {
            return;
        }
        self.used += amount;
        // A request decided on a `now` read before another's keeps its own place in the log.
        let at = self.log.partition_point(|(at, _)| *at <= now);
        match at.checked_sub(1).and_then(|i| self.log.get_mut(i)) {
            Some((when, units)) if *when == now => *units += amount,
            _ => self.log.insert(at, (now, amount)),
        }
    }

    /// Takes `amount` off what was admitted at `admitted`, if that is still in the window.
    pub(super) fn give_back(&mut self, amount: u64, admitted: Instant, now: Instant) {
        self.refresh(now);
        let i = self.log.partition_point(|(at, _)| *at < admitted);
        if let Some((at, units)) = self.log.get_mut(i)
            && *at == admitted
        {
            let back = amount.min(*units);
            *units -= back;
            self.used -= back;
            if *units == 0 {
                self.log.remove(i);
            }
        }
    }

    /// How many admission instants the log holds.
    #[cfg(test)]
    pub(super) fn logged(&self) -> usize {
        self.log.len()
    }

    pub(super) fn view(&mut self, limit: u64, now: Instant) -> MeterView {
        self.refresh(now);
        MeterView {
            limit,
            remaining: self.limit.saturating_sub(self.used),
            reset: self.log.back().map_or(Duration::ZERO, |(at, _)| {
                (*at + self.window).saturating_duration_since(now)
            }),
        }
    }
}
