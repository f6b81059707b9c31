//! The retention: ended jobs are indexed by when they ended, and deleted — record, request,
//! answer and client key — once the retention has passed, a bounded batch at a time.

use redb::{ReadableTable, WriteTransaction};

use super::{BODIES, ENDED, JOBS, JobRecord, JobState, KEYS, META, RESULTS, Store, StoreError};
use super::{from_json, io};

/// Marks a store whose ended jobs are all in [`ENDED`].
const INDEXED: &str = "ended_index";

/// Indexes the jobs a store written before the retention existed has ended, once.
pub(super) fn index_ended(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(io)?;
    if meta.get(INDEXED).map_err(io)?.is_some() {
        return Ok(());
    }
    let jobs = txn.open_table(JOBS).map_err(io)?;
    let mut ended = txn.open_table(ENDED).map_err(io)?;
    for entry in jobs.iter().map_err(io)? {
        let (id, bytes) = entry.map_err(io)?;
        let record: JobRecord = from_json(bytes.value())?;
        if let Some(at_ms) = ended_ms(&record) {
            ended.insert((at_ms, id.value()), ()).map_err(io)?;
        }
    }
    meta.insert(INDEXED, &[1u8][..]).map_err(io)?;
    Ok(())
}

/// When a job ended, if it has.
fn ended_ms(record: &JobRecord) -> Option<u64> {
    match record.state {
        JobState::Done { finished_ms, .. } | JobState::Failed { finished_ms, .. } => {
            Some(finished_ms)
        }
        JobState::Pending | JobState::InFlight { .. } => None,
    }
}

impl Store {
    /// When the job that ended first ended (ms since the epoch), if any has.
    pub(crate) fn first_ended(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let ended = txn.open_table(ENDED).map_err(io)?;
        Ok(ended.first().map_err(io)?.map(|(key, _)| key.value().0))
    }

    /// Deletes at most `limit` jobs that ended before `before_ms`, oldest first, in one
    /// transaction (none, and no disk sync, when none is due); returns how many went.
    pub(crate) fn purge(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let due = {
            let txn = self.db.begin_read().map_err(io)?;
            let ended = txn.open_table(ENDED).map_err(io)?;
            let mut due = Vec::new();
            for entry in ended.range(..(before_ms, 0)).map_err(io)?.take(limit) {
                let (key, _) = entry.map_err(io)?;
                due.push(key.value());
            }
            due
        };
        if due.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut ended = txn.open_table(ENDED).map_err(io)?;
            let mut jobs = txn.open_table(JOBS).map_err(io)?;
            let mut bodies = txn.open_table(BODIES).map_err(io)?;
            let mut results = txn.open_table(RESULTS).map_err(io)?;
            let mut keys = txn.open_table(KEYS).map_err(io)?;
            for &(at_ms, id) in &due {
                ended.remove((at_ms, id)).map_err(io)?;
                let record = match jobs.get(id).map_err(io)? {
                    Some(bytes) => from_json::<JobRecord>(bytes.value())?,
                    None => continue,
                };
                if ended_ms(&record).is_none() {
                    continue;
                }
                jobs.remove(id).map_err(io)?;
                bodies.remove(id).map_err(io)?;
                results.remove(id).map_err(io)?;
                if let Some(key) = &record.key
                    && keys.get(key.as_str()).map_err(io)?.map(|v| v.value()) == Some(id)
                {
                    keys.remove(key.as_str()).map_err(io)?;
                }
            }
        }
        txn.commit().map_err(io)?;
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::{NewJob, Outcome, Via};
    use super::*;

    fn job(key: Option<&str>) -> NewJob {
        NewJob {
            record: JobRecord {
                created_ms: 0,
                max_age_ms: 0,
                key: key.map(str::to_owned),
                method: "POST".into(),
                uri: "https://api.openai.com/v1/chat/completions".into(),
                headers: Vec::new(),
                attempts: 0,
                state: JobState::Pending,
            },
            body: Bytes::from_static(b"{}"),
        }
    }

    /// A store holding five jobs ended at 1, 2, ... 5 s, the first with a key.
    fn ended_jobs(dir: &tempfile::TempDir) -> (Store, Vec<u64>) {
        let store = Store::open(&dir.path().join("queue.redb")).unwrap();
        let mut jobs = vec![job(Some("doc-1"))];
        jobs.extend((0..4).map(|_| job(None)));
        let ids = store.insert(jobs).unwrap();
        store.start_flush(None, &ids, 0).unwrap();
        for (n, &id) in ids.iter().enumerate() {
            let outcome = Outcome::Answered {
                status: 200,
                body: Bytes::from_static(b"answer"),
                via: Via::Call,
                at_ms: 1_000 * (n as u64 + 1),
            };
            store.complete(0, vec![(id, outcome)]).unwrap();
        }
        (store, ids)
    }

    #[test]
    fn purges_go_oldest_first_a_bounded_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = ended_jobs(&dir);
        assert_eq!(store.first_ended().unwrap(), Some(1_000));
        // Ended before 4.5 s: the first four, two per batch.
        assert_eq!(store.purge(4_500, 2).unwrap(), 2);
        assert_eq!(store.job(ids[0]).unwrap(), None);
        assert!(store.keys().unwrap().is_empty(), "its key went with it");
        assert!(store.job(ids[2]).unwrap().is_some());
        assert_eq!(store.purge(4_500, 2).unwrap(), 2);
        assert_eq!(store.purge(4_500, 2).unwrap(), 0);
        assert_eq!(store.first_ended().unwrap(), Some(5_000));
        assert!(store.job(ids[4]).unwrap().is_some());
        assert_eq!(
            store.result(ids[4]).unwrap().as_deref(),
            Some(&b"answer"[..])
        );
    }

    #[test]
    fn a_store_from_before_the_retention_gets_its_ended_jobs_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.redb");
        let (store, ids) = ended_jobs(&dir);
        // As a store written before the index existed: no index, no mark.
        {
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(ENDED).unwrap();
            txn.open_table(META).unwrap().remove(INDEXED).unwrap();
            txn.commit().unwrap();
        }
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.first_ended().unwrap(), Some(1_000));
        assert_eq!(store.purge(u64::MAX, 100).unwrap(), 5);
        assert!(ids.iter().all(|&id| store.job(id).unwrap().is_none()));
    }
}
