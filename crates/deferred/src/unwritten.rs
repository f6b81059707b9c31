//! Answers the store has not taken yet.
//!
//! The queue answers every acknowledged job exactly once, across crashes: an answer counts as
//! given only once it is in the store. When writing it fails — a full disk, where redb refuses
//! the commit — dropping it would leave its job in flight until the queue is next opened, then
//! send it again: a plain call paid twice, a batch's results read again. So the answer is kept
//! in memory and written again on the flusher's later passes, with backoff (1 s, doubling, at
//! most a minute). Its job stays in flight meanwhile: nobody — [`status`], [`wait`],
//! [`completions`] — sees an answer before the store has it, and it is announced once, by the
//! write that stores it.
//!
//! Memory is bounded by [`max_unwritten_bytes`]. Past it, a plain call's job goes back to
//! pending and is sent again (with the same idempotency key), and a Batch API flush is driven
//! again from its recorded stage, reading its results again from the provider: another call
//! or read costs less than memory the process may not have. Those writes carry no answer and
//! are retried the same way, up to [`MAX_ENTRIES`] of everything waiting; past that, the job
//! stays in flight in the store and is recovered the next time the queue is opened, as after a
//! crash. So is everything still waiting when the process stops: memory is not durable, and
//! the store still has the jobs in flight.
//!
//! [`status`]: super::DeferredQueue::status
//! [`wait`]: super::DeferredQueue::wait
//! [`completions`]: super::DeferredQueue::completions
//! [`max_unwritten_bytes`]: super::DeferredConfig::max_unwritten_bytes

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::Shared;
use super::flusher::{spawn_alone, spawn_remote};
use super::store::{Outcome, StoreError};

/// Most writes waiting, answers or not.
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// The first wait before writing again, in ms; it doubles with each failed pass.
const FIRST_BACKOFF_MS: u64 = 1_000;
/// The longest wait before writing again, in ms.
const MAX_BACKOFF_MS: u64 = 60_000;

/// A write the store refused, to make again.
#[derive(Debug)]
pub(crate) enum Entry {
    /// The answer of a job sent alone.
    Answer { id: u64, outcome: Outcome },
    /// A job sent alone whose answer could not be kept: back to pending.
    Requeue { id: u64 },
    /// A Batch API flush's results.
    Batch {
        flush: u64,
        answered: Vec<(u64, Outcome)>,
        not_run: Vec<u64>,
        at_ms: u64,
    },
    /// A Batch API flush whose results could not be kept: read them again.
    Redrive { flush: u64 },
}

impl Entry {
    /// The bytes of answers it holds.
    fn size(&self) -> usize {
        match self {
            Self::Answer { outcome, .. } => outcome.size(),
            Self::Batch { answered, .. } => answered.iter().map(|(_, o)| o.size()).sum(),
            Self::Requeue { .. } | Self::Redrive { .. } => 0,
        }
    }
}

/// The writes waiting, shared by the queue's tasks.
#[derive(Debug, Default)]
pub(crate) struct Unwritten {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Entry>,
    /// Bytes of answers in `entries`.
    bytes: usize,
    /// Passes that failed in a row.
    failures: u32,
    /// When to write again (ms since the epoch).
    retry_at_ms: u64,
}

impl Unwritten {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `entry`, or what stands for it when its answer does not fit in `max_bytes`: a
    /// requeue or a redrive. `false` when nothing could be kept.
    pub(crate) fn keep(&self, entry: Entry, max_bytes: usize, now_ms: u64) -> bool {
        let mut state = self.lock();
        if state.entries.len() >= MAX_ENTRIES {
            return false;
        }
        let size = entry.size();
        let entry = if state.bytes.saturating_add(size) <= max_bytes {
            state.bytes += size;
            entry
        } else {
            match entry {
                Entry::Answer { id, .. } => Entry::Requeue { id },
                Entry::Batch { flush, .. } => Entry::Redrive { flush },
                small => small,
            }
        };
        if state.entries.is_empty() {
            state.retry_at_ms = now_ms.saturating_add(backoff(state.failures));
        }
        state.entries.push_back(entry);
        true
    }

    /// When to write again, if anything waits.
    pub(crate) fn retry_at(&self) -> Option<u64> {
        let state = self.lock();
        (!state.entries.is_empty()).then_some(state.retry_at_ms)
    }

    /// How many writes wait.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Everything waiting, if it is time to write it again.
    fn take_due(&self, now_ms: u64) -> VecDeque<Entry> {
        let mut state = self.lock();
        if state.entries.is_empty() || now_ms < state.retry_at_ms {
            return VecDeque::new();
        }
        state.bytes = 0;
        std::mem::take(&mut state.entries)
    }

    /// Puts back what a failed pass did not write, ahead of what came meanwhile.
    fn put_back(&self, mut entries: VecDeque<Entry>, now_ms: u64) {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        state.retry_at_ms = now_ms.saturating_add(backoff(state.failures));
        entries.extend(std::mem::take(&mut state.entries));
        state.bytes = entries.iter().map(Entry::size).sum();
        state.entries = entries;
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        state.failures = 0;
    }
}

fn backoff(failures: u32) -> u64 {
    FIRST_BACKOFF_MS
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF_MS)
}

/// Writes what waits, if it is time: in order, stopping at the first refusal.
pub(crate) async fn retry(shared: &Arc<Shared>) {
    let mut entries = shared.unwritten.take_due(shared.now_ms());
    if entries.is_empty() {
        return;
    }
    while let Some(entry) = entries.pop_front() {
        if let Err(error) = write(shared, &entry).await {
            entries.push_front(entry);
            tracing::warn!(%error, waiting = entries.len(), "the queue store still refuses answers; trying again later");
            shared.unwritten.put_back(entries, shared.now_ms());
            return;
        }
    }
    shared.unwritten.succeeded();
}

async fn write(shared: &Arc<Shared>, entry: &Entry) -> Result<(), StoreError> {
    match entry {
        Entry::Answer { id, outcome } => {
            let (id, outcome) = (*id, outcome.clone());
            let ended = shared
                .with_store(move |store| store.complete(0, vec![(id, outcome)]))
                .await?;
            shared.announce(&ended);
        }
        Entry::Requeue { id } => {
            let id = *id;
            shared
                .with_store(move |store| store.requeue_alone(id))
                .await?;
            shared.wake.notify_one();
        }
        Entry::Batch {
            flush,
            answered,
            not_run,
            at_ms,
        } => {
            let (flush, answered, not_run, at_ms) =
                (*flush, answered.clone(), not_run.clone(), *at_ms);
            let max_attempts = shared.config.max_attempts;
            let (ended, alone) = shared
                .with_store(move |store| {
                    store.settle(flush, answered, &not_run, max_attempts, at_ms)
                })
                .await?;
            shared.announce(&ended);
            for id in alone {
                spawn_alone(shared, id);
            }
        }
        Entry::Redrive { flush } => {
            let flush = *flush;
            let record = shared
                .with_store(move |store| Ok(store.flushes()?.remove(&flush)))
                .await?;
            if let Some(record) = record {
                spawn_remote(shared, flush, record);
            }
        }
    }
    Ok(())
}

/// Hands a write the store refused to the flusher, which makes it again later.
pub(crate) fn refused(shared: &Shared, entry: Entry, error: &StoreError) {
    let job = match &entry {
        Entry::Answer { id, .. } | Entry::Requeue { id } => format!("job {id}"),
        Entry::Batch { flush, .. } | Entry::Redrive { flush } => format!("flush {flush}"),
    };
    let max_bytes = shared.config.max_unwritten_bytes;
    if shared.unwritten.keep(entry, max_bytes, shared.now_ms()) {
        tracing::warn!(%error, what = %job, "could not write an answer to the queue store; it is kept and written later");
    } else {
        tracing::warn!(%error, what = %job, "could not write an answer to the queue store, nor keep it; it stays in flight until the queue is opened again");
    }
    shared.wake.notify_one();
}
