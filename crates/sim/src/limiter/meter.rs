//! One limit on one dimension, in whichever shape the key's `window` names.

use std::time::Duration;

use tokio::time::Instant;

use super::bucket::Bucket;
use super::fixed::FixedWindow;
use super::gcra::LeakyBucket;
use super::sliding::SlidingWindow;
use crate::config::Window;

/// What a meter reports in rate-limit headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MeterView {
    /// The limit per period (a minute, or a day for [`Dimension::RequestsPerDay`]).
    ///
    /// [`Dimension::RequestsPerDay`]: super::Dimension::RequestsPerDay
    pub(crate) limit: u64,
    /// What can still be taken now.
    pub(crate) remaining: u64,
    /// Until the meter is full again.
    pub(crate) reset: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// One limit on one dimension.
#[derive(Clone, Debug)]
pub(super) enum Meter {
    Bucket(Bucket),
    Fixed(FixedWindow),
    Sliding(SlidingWindow),
    Leaky(LeakyBucket),
}

impl Meter {
    /// A limit of `per_minute`, counted as `window` says, with `burst` for the shapes that
    /// have one.
    pub(super) fn new(per_minute: u64, window: Window, burst: Option<u64>, now: Instant) -> Self {
        // The per-minute quota scaled to a window shorter than a minute, rounded up.
        let share = |window: Duration| {
            let share = per_minute as f64 * window.as_secs_f64() / MINUTE.as_secs_f64();
            (share.ceil() as u64).max(1)
        };
        match window {
            Window::TokenBucket => Self::Bucket(Bucket::new(
                burst.unwrap_or(per_minute),
                per_minute,
                MINUTE,
                now,
            )),
            Window::Fixed(window) => Self::Fixed(FixedWindow::new(share(window), window, now)),
            Window::Sliding(window) => Self::Sliding(SlidingWindow::new(share(window), window)),
            Window::LeakyBucket => Self::Leaky(LeakyBucket::new(per_minute, burst, now)),
        }
    }

    /// A full bucket of a day's quota, refilled over 24 hours.
    pub(super) fn per_day(per_day: u64, now: Instant) -> Self {
        Self::Bucket(Bucket::new(per_day, per_day, DAY, now))
    }

    /// The most one request can ever take.
    pub(super) fn ceiling(&self) -> u64 {
        match self {
            Self::Bucket(bucket) => bucket.ceiling(),
            Self::Fixed(fixed) => fixed.ceiling(),
            Self::Sliding(sliding) => sliding.ceiling(),
            Self::Leaky(leaky) => leaky.ceiling(),
        }
    }

    /// `None` if `amount` fits now, else how long until it will (if nothing else is taken in
    /// the meantime).
    pub(super) fn wait_for(&mut self, amount: u64, now: Instant) -> Option<Duration> {
        match self {
            Self::Bucket(bucket) => bucket.wait_for(amount, now),
            Self::Fixed(fixed) => fixed.wait_for(amount, now),
            Self::Sliding(sliding) => sliding.wait_for(amount, now),
            Self::Leaky(leaky) => leaky.wait_for(amount, now),
        }
    }

    /// Takes `amount`, which [`wait_for`](Self::wait_for) just said fits at `now`.
    pub(super) fn take(&mut self, amount: u64, now: Instant) {
        match self {
            Self::Bucket(bucket) => bucket.take(amount),
            Self::Fixed(fixed) => fixed.take(amount),
            Self::Sliding(sliding) => sliding.take(amount, now),
            Self::Leaky(leaky) => leaky.take(amount, now),
        }
    }

    /// Returns `amount` of what was taken at `admitted`.
    pub(super) fn give_back(&mut self, amount: u64, admitted: Instant, now: Instant) {
        match self {
            Self::Bucket(bucket) => bucket.give_back(amount, now),
            Self::Fixed(fixed) => fixed.give_back(amount, now),
            Self::Sliding(sliding) => sliding.give_back(amount, admitted, now),
            Self::Leaky(leaky) => leaky.give_back(amount),
        }
    }

    pub(super) fn view(&mut self, limit: u64, now: Instant) -> MeterView {
        match self {
            Self::Bucket(bucket) => bucket.view(limit, now),
            Self::Fixed(fixed) => fixed.view(limit, now),
            Self::Sliding(sliding) => sliding.view(limit, now),
            Self::Leaky(leaky) => leaky.view(limit, now),
        }
    }
}
