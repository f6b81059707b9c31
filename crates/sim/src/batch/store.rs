//! Where files and batches live (inside the simulator's one lock), and the clock every batch
//! follows.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::anthropic::MessageBatch;
use super::jsonl::Input;
use super::openai::Batch;
use crate::state::Shared;

/// How long the providers keep a batch before it expires.
pub(super) const WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Every file and batch, by id.
#[derive(Default)]
pub(crate) struct Store {
    pub(super) files: HashMap<String, StoredFile>,
    pub(super) batches: HashMap<String, Batch>,
    pub(super) message_batches: HashMap<String, MessageBatch>,
    uploads: u64,
    created: u64,
}

impl Store {
    /// The number of the next uploaded file.
    pub(super) fn next_upload(&mut self) -> u64 {
        self.uploads += 1;
        self.uploads
    }

    /// The number of the next batch, of either provider: it seeds the batch's answers.
    pub(super) fn next_batch(&mut self) -> u64 {
        self.created += 1;
        self.created
    }
}

// By hand: a derived `Debug` would print every stored byte.
impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("files", &self.files.len())
            .field("batches", &self.batches.len())
            .field("message_batches", &self.message_batches.len())
            .finish()
    }
}

/// An OpenAI file: an uploaded batch input, or a batch's output or error file.
pub(super) struct StoredFile {
    pub(super) id: String,
    pub(super) filename: String,
    /// `batch`, `batch_output`.
    pub(super) purpose: &'static str,
    pub(super) created_at: u64,
    pub(super) content: Bytes,
    /// The parsed requests of an input file.
    pub(super) input: Option<Arc<Input>>,
}

impl StoredFile {
    /// The `file` object.
    pub(super) fn object(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.content.len(),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
        })
    }
}

/// Where a batch is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// The first tenth of the completion delay.
    Validating,
    /// Until the completion delay has passed.
    InProgress,
    /// Every request has its result.
    Done,
    /// Canceled, for a tenth of the completion delay.
    Canceling,
    /// Canceled, and ended.
    Canceled,
    /// Ended at [`BatchConfig::expire_after`](crate::config::BatchConfig), before the
    /// completion delay had passed.
    Expired,
}

/// A batch's clock: every phase and timestamp follows from its creation, the completion delay,
/// the expiry and the moment it was canceled, if it was.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeline {
    created: Instant,
    created_wall: SystemTime,
    delay: Duration,
    /// How long after creation it expires, if it is configured to.
    expire_after: Option<Duration>,
    /// When it was canceled, after creation.
    canceled: Option<Duration>,
}

impl Timeline {
    /// A batch created at `now`.
    pub(super) fn new(shared: &Shared, now: Instant) -> Self {
        Self {
            created: now,
            created_wall: shared.wall(now),
            delay: shared.config.batch.completion_delay,
            expire_after: shared.config.batch.expire_after,
            canceled: None,
        }
    }

    /// How long validation (and cancellation) takes.
    fn settling(&self) -> Duration {
        self.delay / 10
    }

    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// When it expires, after creation, if that comes before its completion.
    fn expiry(&self) -> Option<Duration> {
        self.expire_after.filter(|&at| at < self.delay)
    }

    /// The phase at `now`. A cancellation, once asked for, outranks an expiry.
    pub(super) fn phase(&self, now: Instant) -> Phase {
        let age = self.age(now);
        match self.canceled {
            Some(at) if age >= at.saturating_add(self.settling()) => Phase::Canceled,
            Some(_) => Phase::Canceling,
            None if self.expiry().is_some_and(|at| age >= at) => Phase::Expired,
            None if age >= self.delay => Phase::Done,
            None if age < self.settling() => Phase::Validating,
            None => Phase::InProgress,
        }
    }

    /// How many of its first `requests` run before it ends: all of them, unless it expires
    /// first; then the share of the completion delay that had passed, rounded down.
    pub(super) fn processed(&self, requests: usize) -> usize {
        match self.expiry() {
            None => requests,
            Some(at) => {
                // At most `requests`, as `at < delay`; u128 holds any product of the two.
                let share = requests as u128 * at.as_nanos() / self.delay.as_nanos();
                usize::try_from(share).unwrap_or(requests)
            }
        }
    }

    /// Cancels it at `now`, if it is still running; `false` if it is not.
    pub(super) fn cancel(&mut self, now: Instant) -> bool {
        let running = matches!(self.phase(now), Phase::Validating | Phase::InProgress);
        if running {
            self.canceled = Some(self.age(now));
        }
        running
    }

    /// The wall time `after` its creation.
    fn wall(&self, after: Duration) -> SystemTime {
        self.created_wall
            .checked_add(after)
            .unwrap_or(self.created_wall)
    }

    /// When it was created.
    pub(super) fn created_at(&self) -> SystemTime {
        self.created_wall
    }

    /// When it expires: a day after creation, or
    /// [`expire_after`](crate::config::BatchConfig::expire_after) when that is set.
    pub(super) fn expires_at(&self) -> SystemTime {
        self.wall(self.expire_after.unwrap_or(WINDOW))
    }

    /// When validation ended, once it has (and if the batch was not canceled, nor did it
    /// expire, during it).
    pub(super) fn validated_at(&self, now: Instant) -> Option<SystemTime> {
        let at = self.settling();
        let reached = self.age(now) >= at
            && self.canceled.is_none_or(|c| c >= at)
            && self.expiry().is_none_or(|e| e > at);
        reached.then(|| self.wall(at))
    }

    /// When it expired, once it has.
    pub(super) fn expired_at(&self, now: Instant) -> Option<SystemTime> {
        let at = self.expiry()?;
        (self.phase(now) == Phase::Expired).then(|| self.wall(at))
    }

    /// When it ended, whichever way (completed, canceled or expired), once it has.
    pub(super) fn ended_at(&self, now: Instant) -> Option<SystemTime> {
        self.completed_at(now)
            .or_else(|| self.canceled_at(now))
            .or_else(|| self.expired_at(now))
    }

    /// When every result was in, once they are.
    pub(super) fn completed_at(&self, now: Instant) -> Option<SystemTime> {
        (self.phase(now) == Phase::Done).then(|| self.wall(self.delay))
    }

    /// When the cancellation was asked for.
    pub(super) fn cancel_initiated_at(&self) -> Option<SystemTime> {
        self.canceled.map(|at| self.wall(at))
    }

    /// When the cancellation was complete, once it is.
    pub(super) fn canceled_at(&self, now: Instant) -> Option<SystemTime> {
        let at = self.canceled?.saturating_add(self.settling());
        (self.phase(now) == Phase::Canceled).then(|| self.wall(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    #[tokio::test(start_paused = true)]
    async fn phases_follow_the_clock() {
        let mut config = SimConfig::default();
        config.batch.completion_delay = Duration::from_secs(10);
        let shared = Shared::new(config);
        let start = Instant::now();
        let timeline = Timeline::new(&shared, start);
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        assert_eq!(timeline.phase(at(0.0)), Phase::Validating);
        assert_eq!(timeline.validated_at(at(0.5)), None);
        assert_eq!(timeline.phase(at(1.0)), Phase::InProgress);
        assert!(timeline.validated_at(at(1.0)).is_some());
        assert_eq!(timeline.phase(at(9.9)), Phase::InProgress);
        assert_eq!(timeline.phase(at(10.0)), Phase::Done);
        assert_eq!(
            timeline.completed_at(at(99.0)),
            Some(timeline.created_at() + Duration::from_secs(10))
        );

        let mut canceled = timeline;
        assert!(canceled.cancel(at(0.5)));
        assert_eq!(canceled.phase(at(1.0)), Phase::Canceling);
        assert_eq!(canceled.phase(at(1.5)), Phase::Canceled);
        assert_eq!(canceled.validated_at(at(20.0)), None);
        assert!(!canceled.cancel(at(2.0)));
        let mut late = timeline;
        assert!(!late.cancel(at(10.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiry_before_completion_ends_the_batch_early() {
        let mut config = SimConfig::default();
        config.batch.completion_delay = Duration::from_secs(10);
        config.batch.expire_after = Some(Duration::from_secs(4));
        let shared = Shared::new(config);
        let start = Instant::now();
        let timeline = Timeline::new(&shared, start);
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        let created = timeline.created_at();
        assert_eq!(timeline.expires_at(), created + Duration::from_secs(4));
        assert_eq!(timeline.phase(at(3.9)), Phase::InProgress);
        assert_eq!(timeline.expired_at(at(3.9)), None);
        assert_eq!(timeline.phase(at(4.0)), Phase::Expired);
        assert_eq!(timeline.phase(at(99.0)), Phase::Expired);
        assert_eq!(timeline.completed_at(at(99.0)), None);
        let expired = Some(created + Duration::from_secs(4));
        assert_eq!(timeline.expired_at(at(99.0)), expired);
        assert_eq!(timeline.ended_at(at(99.0)), expired);
        assert!(timeline.validated_at(at(99.0)).is_some());
        // 4 s of 10: the first 40 %, rounded down.
        assert_eq!(timeline.processed(10), 4);
        assert_eq!(timeline.processed(3), 1);
        assert_eq!(timeline.processed(0), 0);
        let mut over = timeline;
        assert!(!over.cancel(at(4.0)), "an expired batch is over");

        // A cancellation asked for before the expiry wins over it.
        let mut canceled = timeline;
        assert!(canceled.cancel(at(3.5)));
        assert_eq!(canceled.phase(at(4.0)), Phase::Canceling);
        assert_eq!(canceled.phase(at(4.5)), Phase::Canceled);
        assert_eq!(canceled.expired_at(at(99.0)), None);

        // An expiry during validation: never validated.
        let mut config = SimConfig::default();
        config.batch.completion_delay = Duration::from_secs(100);
        config.batch.expire_after = Some(Duration::from_secs(5));
        let early = Timeline::new(&Shared::new(config), start);
        assert_eq!(early.phase(at(5.0)), Phase::Expired);
        assert_eq!(early.validated_at(at(50.0)), None);
        assert_eq!(early.processed(100), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiry_after_completion_changes_nothing_but_expires_at() {
        let mut config = SimConfig::default();
        config.batch.completion_delay = Duration::from_secs(10);
        config.batch.expire_after = Some(Duration::from_secs(10));
        let shared = Shared::new(config);
        let start = Instant::now();
        let timeline = Timeline::new(&shared, start);
        assert_eq!(timeline.phase(start + Duration::from_secs(10)), Phase::Done);
        assert_eq!(timeline.processed(7), 7);
        assert_eq!(
            timeline.expires_at(),
            timeline.created_at() + Duration::from_secs(10)
        );
    }

    #[tokio::test]
    async fn huge_delays_do_not_overflow() {
        let mut config = SimConfig::default();
        config.batch.completion_delay = Duration::MAX;
        let shared = Shared::new(config);
        let mut timeline = Timeline::new(&shared, Instant::now());
        assert_eq!(timeline.phase(Instant::now()), Phase::Validating);
        assert!(timeline.cancel(Instant::now()));
        assert_eq!(timeline.phase(Instant::now()), Phase::Canceling);
        assert!(timeline.expires_at() > timeline.created_at());

        let mut config = SimConfig::default();
        config.batch.completion_delay = Duration::MAX;
        config.batch.expire_after = Some(Duration::from_secs(24 * 60 * 60));
        let timeline = Timeline::new(&Shared::new(config), Instant::now());
        assert_eq!(timeline.processed(100_000), 0);
    }
}
