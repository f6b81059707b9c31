//! How jobs move through flushes and end: moved into a flush (or sent alone), its progress
//! recorded, given back to pending, and ended with their answers — each step one transaction.

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};

use super::{
    ENDED, Ended, FLUSHES, FlushRecord, JOBS, JobRecord, JobState, META, Outcome, PENDING, RESULTS,
    Stage, Store, StoreError, Via, from_json, io, to_json,
};

impl Store {
    /// Moves pending jobs into a new flush (or, with `api == None`, marks them sent alone);
    /// returns the flush id and the jobs actually moved (those still pending).
    pub(crate) fn start_flush(
        &self,
        api: Option<&str>,
        ids: &[u64],
        now_ms: u64,
    ) -> Result<(u64, Vec<u64>), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let started = Self::start_flush_in(&txn, api, ids, now_ms)?;
        txn.commit().map_err(io)?;
        Ok(started)
    }

    fn start_flush_in(
        txn: &WriteTransaction,
        api: Option<&str>,
        ids: &[u64],
        now_ms: u64,
    ) -> Result<(u64, Vec<u64>), StoreError> {
        let mut moved = Vec::with_capacity(ids.len());
        let mut meta = txn.open_table(META).map_err(io)?;
        let mut jobs = txn.open_table(JOBS).map_err(io)?;
        let mut pending = txn.open_table(PENDING).map_err(io)?;
        let mut flushes = txn.open_table(FLUSHES).map_err(io)?;
        let flush = match api {
            Some(_) => Self::next(&mut meta, "next_flush")?,
            None => 0,
        };
        for &id in ids {
            if pending.remove(id).map_err(io)?.is_none() {
                continue;
            }
            let Some(bytes) = jobs.get(id).map_err(io)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let mut record: JobRecord = from_json(&bytes)?;
            record.state = JobState::InFlight { flush };
            jobs.insert(id, &to_json(&record)?[..]).map_err(io)?;
            moved.push(id);
        }
        if let Some(api) = api {
            let record = FlushRecord {
                api: api.to_owned(),
                jobs: moved.clone(),
                stage: Stage::Created,
                created_ms: now_ms,
            };
            flushes.insert(flush, &to_json(&record)?[..]).map_err(io)?;
        }
        Ok((flush, moved))
    }

    pub(crate) fn flushes(&self) -> Result<BTreeMap<u64, FlushRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(FLUSHES).map_err(io)?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(io)? {
            let (id, bytes) = entry.map_err(io)?;
            out.insert(id.value(), from_json(bytes.value())?);
        }
        Ok(out)
    }

    /// Records how far a flush got.
    pub(crate) fn set_stage(&self, flush: u64, stage: Stage) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut flushes = txn.open_table(FLUSHES).map_err(io)?;
            let Some(bytes) = flushes.get(flush).map_err(io)?.map(|v| v.value().to_vec()) else {
                return Ok(());
            };
            let mut record: FlushRecord = from_json(&bytes)?;
            if matches!(stage, Stage::Submitted { .. })
                && !matches!(record.stage, Stage::Submitted { .. })
            {
                let mut meta = txn.open_table(META).map_err(io)?;
                Self::update_counters(&mut meta, |c| c.batches += 1)?;
            }
            record.stage = stage;
            flushes.insert(flush, &to_json(&record)?[..]).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        Ok(())
    }

    /// Gives a flush's unanswered jobs back to pending (counting an attempt when `attempt`),
    /// and forgets the flush.
    pub(crate) fn dissolve(&self, flush: u64, attempt: bool) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let returned = Self::dissolve_in(&txn, flush, attempt)?;
        txn.commit().map_err(io)?;
        Ok(returned)
    }

    fn dissolve_in(
        txn: &WriteTransaction,
        flush: u64,
        attempt: bool,
    ) -> Result<Vec<u64>, StoreError> {
        let mut flushes = txn.open_table(FLUSHES).map_err(io)?;
        let mut jobs = txn.open_table(JOBS).map_err(io)?;
        let mut pending = txn.open_table(PENDING).map_err(io)?;
        let ids = match flushes.remove(flush).map_err(io)? {
            Some(bytes) => from_json::<FlushRecord>(bytes.value())?.jobs,
            None => Vec::new(),
        };
        let mut returned = Vec::new();
        for id in ids {
            let Some(bytes) = jobs.get(id).map_err(io)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let mut record: JobRecord = from_json(&bytes)?;
            if record.state != (JobState::InFlight { flush }) {
                continue;
            }
            record.state = JobState::Pending;
            record.attempts += u32::from(attempt);
            jobs.insert(id, &to_json(&record)?[..]).map_err(io)?;
            pending.insert(id, record.created_ms).map_err(io)?;
            returned.push(id);
        }
        Ok(returned)
    }

    /// Gives every job sent alone (flush 0) back to pending: after a crash nobody knows whether
    /// its call was made.
    pub(crate) fn recover_alone(&self) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let returned = {
            let mut jobs = txn.open_table(JOBS).map_err(io)?;
            let mut pending = txn.open_table(PENDING).map_err(io)?;
            let mut stuck = Vec::new();
            for entry in jobs.iter().map_err(io)? {
                let (id, bytes) = entry.map_err(io)?;
                let record: JobRecord = from_json(bytes.value())?;
                if record.state == (JobState::InFlight { flush: 0 }) {
                    stuck.push((id.value(), record));
                }
            }
            let mut returned = Vec::new();
            for (id, mut record) in stuck {
                record.state = JobState::Pending;
                record.attempts += 1;
                jobs.insert(id, &to_json(&record)?[..]).map_err(io)?;
                pending.insert(id, record.created_ms).map_err(io)?;
                returned.push(id);
            }
            returned
        };
        txn.commit().map_err(io)?;
        Ok(returned)
    }

    /// Ends jobs of `flush` (0: sent alone) with their outcomes, once: a job already ended, or
    /// no longer in that flush, is left as it is. Returns the jobs ended now.
    pub(crate) fn complete(
        &self,
        flush: u64,
        outcomes: Vec<(u64, Outcome)>,
    ) -> Result<Ended, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let ended = Self::complete_in(&txn, flush, outcomes)?;
        self.commit_answers(txn)?;
        Ok(ended)
    }

    /// Settles a Batch API flush in one transaction: ends the jobs it answered, gives the rest
    /// back to pending (an attempt each), and sends alone those of `not_run` it was the last
    /// attempt for. Returns the jobs ended and those to send alone. Settling a flush again
    /// changes nothing: its jobs have moved on.
    pub(crate) fn settle(
        &self,
        flush: u64,
        answered: Vec<(u64, Outcome)>,
        not_run: &[u64],
        max_attempts: u32,
        at_ms: u64,
    ) -> Result<(Ended, Vec<u64>), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let ended = Self::complete_in(&txn, flush, answered)?;
        let mut exhausted = Vec::new();
        {
            let jobs = txn.open_table(JOBS).map_err(io)?;
            for &id in not_run {
                let Some(bytes) = jobs.get(id).map_err(io)? else {
                    continue;
                };
                let record: JobRecord = from_json(bytes.value())?;
                // Not run: another flush takes it; after `max_attempts` batches that did not
                // run it, it goes alone.
                if record.state == (JobState::InFlight { flush })
                    && record.attempts + 1 >= max_attempts
                {
                    exhausted.push(id);
                }
            }
        }
        Self::dissolve_in(&txn, flush, true)?;
        let (_, alone) = Self::start_flush_in(&txn, None, &exhausted, at_ms)?;
        self.commit_answers(txn)?;
        Ok((ended, alone))
    }

    /// Gives a job sent alone back to pending (its answer could not be kept): it is sent again.
    pub(crate) fn requeue_alone(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let requeued = {
            let mut jobs = txn.open_table(JOBS).map_err(io)?;
            let mut pending = txn.open_table(PENDING).map_err(io)?;
            let Some(bytes) = jobs.get(id).map_err(io)?.map(|v| v.value().to_vec()) else {
                return Ok(false);
            };
            let mut record: JobRecord = from_json(&bytes)?;
            if record.state != (JobState::InFlight { flush: 0 }) {
                return Ok(false);
            }
            record.state = JobState::Pending;
            record.attempts += 1;
            jobs.insert(id, &to_json(&record)?[..]).map_err(io)?;
            pending.insert(id, record.created_ms).map_err(io)?;
            true
        };
        txn.commit().map_err(io)?;
        Ok(requeued)
    }

    /// Commits a transaction that writes answers (refused on demand in tests, as a full disk
    /// refuses it).
    fn commit_answers(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering;
            let refuse =
                self.refuse_answers
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if refuse.is_ok() {
                txn.abort().map_err(io)?;
                return Err(StoreError::Io("no space left on device (injected)".into()));
            }
        }
        txn.commit().map_err(io)
    }

    fn complete_in(
        txn: &WriteTransaction,
        flush: u64,
        outcomes: Vec<(u64, Outcome)>,
    ) -> Result<Ended, StoreError> {
        let mut meta = txn.open_table(META).map_err(io)?;
        let mut jobs = txn.open_table(JOBS).map_err(io)?;
        let mut results = txn.open_table(RESULTS).map_err(io)?;
        let mut ended_at = txn.open_table(ENDED).map_err(io)?;
        let mut ended = Vec::new();
        let mut counters = Self::counters_in(&meta)?;
        for (id, outcome) in outcomes {
            let Some(bytes) = jobs.get(id).map_err(io)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let mut record: JobRecord = from_json(&bytes)?;
            if record.state != (JobState::InFlight { flush }) {
                continue;
            }
            let (ok, at_ms) = match outcome {
                Outcome::Answered {
                    status,
                    body,
                    via,
                    at_ms,
                } => {
                    results.insert(id, &body[..]).map_err(io)?;
                    record.state = JobState::Done {
                        status,
                        finished_ms: at_ms,
                        via,
                    };
                    counters.done += 1;
                    match via {
                        Via::BatchApi => counters.batched_jobs += 1,
                        Via::Call => counters.calls += 1,
                    }
                    (true, at_ms)
                }
                Outcome::Failed { error, at_ms } => {
                    record.state = JobState::Failed {
                        error,
                        finished_ms: at_ms,
                    };
                    counters.failed += 1;
                    (false, at_ms)
                }
            };
            jobs.insert(id, &to_json(&record)?[..]).map_err(io)?;
            ended_at.insert((at_ms, id), ()).map_err(io)?;
            ended.push((id, ok));
        }
        meta.insert("counters", &to_json(&counters)?[..])
            .map_err(io)?;
        Ok(ended)
    }

    pub(crate) fn count_submit_failure(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            Self::update_counters(&mut meta, |c| c.submit_failures += 1)?;
        }
        txn.commit().map_err(io)?;
        Ok(())
    }
}
