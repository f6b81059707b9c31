//! The queue's embedded store (redb): every job, its request and result, and every flush.
//!
//! All calls are synchronous and short; the queue runs them on the blocking pool. Every write
//! is one transaction committed with immediate durability, so what a call returned survives a
//! crash.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Names the format; a file without it is not a queue.
const FORMAT: &str = "tollgate-deferred/1";

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const JOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("jobs");
const BODIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("bodies");
const RESULTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("results");
/// Pending jobs, oldest first: id → creation (ms since the epoch).
const PENDING: TableDefinition<'_, u64, u64> = TableDefinition::new("pending");
/// Client keys: key → job id.
const KEYS: TableDefinition<'_, &str, u64> = TableDefinition::new("keys");
const FLUSHES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("flushes");

/// Why the store could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not a readable queue (corrupted, truncated, or something else);
    /// it is left as it is.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A read or write failed.
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { path, reason } => write!(
                f,
                "{} is not a readable tollgate queue ({reason}); it was left untouched",
                path.display()
            ),
            Self::Io(reason) => write!(f, "queue store: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

fn io(error: impl fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum JobState {
    Pending,
    /// Part of flush `flush` (0: sent alone, at once).
    InFlight {
        flush: u64,
    },
    Done {
        status: u16,
        finished_ms: u64,
        via: Via,
    },
    Failed {
        error: String,
        finished_ms: u64,
    },
}

/// How a job was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A plain call through the stack.
    Call,
    /// A provider Batch API.
    BatchApi,
}

/// A job's record, without its bodies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub(crate) created_ms: u64,
    pub(crate) max_age_ms: u64,
    pub(crate) key: Option<String>,
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<(String, String)>,
    /// Times it was handed to a flush that did not answer it (an expired batch, a crash).
    pub(crate) attempts: u32,
    pub(crate) state: JobState,
}

/// How far a flush got with its Batch API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub(crate) enum Stage {
    /// Recorded; nothing sent yet (or sent, and not yet recorded).
    Created,
    /// The input file is uploaded.
    Uploaded { file_id: String },
    /// The batch exists at the provider.
    Submitted { batch_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FlushRecord {
    /// `plain`, or the Batch API's name.
    pub(crate) api: String,
    pub(crate) jobs: Vec<u64>,
    pub(crate) stage: Stage,
    pub(crate) created_ms: u64,
}

/// Counters kept with the jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) done: u64,
    pub(crate) failed: u64,
    /// Jobs answered through a Batch API.
    pub(crate) batched_jobs: u64,
    /// Batches submitted.
    pub(crate) batches: u64,
    /// Plain calls made.
    pub(crate) calls: u64,
    /// Uploads or batch creations that failed (their jobs went back to pending).
    pub(crate) submit_failures: u64,
}

/// The store.
pub(crate) struct Store {
    db: Database,
    /// A random id of this store, so two stores' batches are never confused.
    pub(crate) id: u64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("id", &self.id).finish()
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(io)
}

fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(io)
}

/// A new job, as written by [`Store::insert`].
pub(crate) struct NewJob {
    pub(crate) record: JobRecord,
    pub(crate) body: Bytes,
}

impl Store {
    /// Opens the queue at `path`, creating it when the file does not exist. An existing file
    /// that is not a queue is an error and is never written to.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let unreadable = |reason: String| StoreError::Unreadable {
            path: path.to_owned(),
            reason,
        };
        let exists = path.exists();
        let db = if exists {
            let mut magic = [0u8; 9];
            let read = std::fs::File::open(path)
                .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic));
            if read.is_err() || magic != REDB_MAGIC {
                return Err(unreadable("not a redb file".into()));
            }
            // redb asserts on some damage (a truncated file) rather than returning an error.
            match std::panic::catch_unwind(|| Database::open(path)) {
                Ok(Ok(db)) => db,
                Ok(Err(error)) => return Err(unreadable(error.to_string())),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown damage".into());
                    return Err(unreadable(format!("damaged: {why}")));
                }
            }
        } else {
            Self::create(path)?;
            Database::open(path).map_err(|e| unreadable(e.to_string()))?
        };
        let txn = db.begin_write().map_err(io)?;
        let id = {
            let meta = txn.open_table(META).map_err(io)?;
            let format = meta.get("format").map_err(io)?.map(|v| v.value().to_vec());
            match format {
                Some(format) if format == FORMAT.as_bytes() => {}
                Some(other) => {
                    return Err(unreadable(format!(
                        "format {:?}, expected {FORMAT}",
                        String::from_utf8_lossy(&other)
                    )));
                }
                None => {
                    return Err(unreadable("a redb file without a queue in it".into()));
                }
            }
            let id = meta.get("id").map_err(io)?.map(|v| v.value().to_vec());
            let id = id.ok_or_else(|| unreadable("no store id".into()))?;
            u64::from_le_bytes(
                id.try_into()
                    .map_err(|_| unreadable("bad store id".into()))?,
            )
        };
        // Create every table, so reads never find one missing.
        txn.open_table(JOBS).map_err(io)?;
        txn.open_table(BODIES).map_err(io)?;
        txn.open_table(RESULTS).map_err(io)?;
        txn.open_table(PENDING).map_err(io)?;
        txn.open_table(KEYS).map_err(io)?;
        txn.open_table(FLUSHES).map_err(io)?;
        txn.commit().map_err(io)?;
        Ok(Self { db, id })
    }

    /// Creates a queue file whole or not at all: it is built beside `path`, then renamed into
    /// place, so a crash during creation leaves no half-made file where the queue belongs (the
    /// leftover beside it is ours, holds nothing acknowledged, and is replaced next time).
    fn create(path: &Path) -> Result<(), StoreError> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".creating");
        let building = path.with_file_name(name);
        let _ = std::fs::remove_file(&building);
        {
            let db = Database::create(&building).map_err(io)?;
            let txn = db.begin_write().map_err(io)?;
            {
                let mut meta = txn.open_table(META).map_err(io)?;
                meta.insert("format", FORMAT.as_bytes()).map_err(io)?;
                let id: u64 = rand::random();
                meta.insert("id", &id.to_le_bytes()[..]).map_err(io)?;
            }
            txn.commit().map_err(io)?;
        }
        std::fs::rename(&building, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    fn next(meta: &mut redb::Table<'_, &str, &[u8]>, name: &str) -> Result<u64, StoreError> {
        let current = meta
            .get(name)
            .map_err(io)?
            .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        let next = current + 1;
        meta.insert(name, &next.to_le_bytes()[..]).map_err(io)?;
        Ok(next)
    }

    fn counters_in(
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Counters, StoreError> {
        match meta.get("counters").map_err(io)? {
            Some(bytes) => from_json(bytes.value()),
            None => Ok(Counters::default()),
        }
    }

    fn update_counters(
        meta: &mut redb::Table<'_, &str, &[u8]>,
        change: impl FnOnce(&mut Counters),
    ) -> Result<(), StoreError> {
        let mut counters = Self::counters_in(meta)?;
        change(&mut counters);
        meta.insert("counters", &to_json(&counters)?[..])
            .map_err(io)?;
        Ok(())
    }

    /// Writes new jobs in one durable transaction; a job whose key is already known is not
    /// written again and its existing id is returned.
    pub(crate) fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let mut ids = Vec::with_capacity(jobs.len());
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let mut table = txn.open_table(JOBS).map_err(io)?;
            let mut bodies = txn.open_table(BODIES).map_err(io)?;
            let mut pending = txn.open_table(PENDING).map_err(io)?;
            let mut keys = txn.open_table(KEYS).map_err(io)?;
            for job in jobs {
                if let Some(key) = &job.record.key
                    && let Some(existing) = keys.get(key.as_str()).map_err(io)?
                {
                    ids.push(existing.value());
                    continue;
                }
                let id = Self::next(&mut meta, "next_job")?;
                if let Some(key) = &job.record.key {
                    keys.insert(key.as_str(), id).map_err(io)?;
                }
                table.insert(id, &to_json(&job.record)?[..]).map_err(io)?;
                bodies.insert(id, &job.body[..]).map_err(io)?;
                pending.insert(id, job.record.created_ms).map_err(io)?;
                ids.push(id);
            }
        }
        txn.commit().map_err(io)?;
        Ok(ids)
    }

    pub(crate) fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(JOBS).map_err(io)?;
        table
            .get(id)
            .map_err(io)?
            .map(|v| from_json(v.value()))
            .transpose()
    }

    pub(crate) fn body(&self, id: u64) -> Result<Bytes, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(BODIES).map_err(io)?;
        Ok(table
            .get(id)
            .map_err(io)?
            .map(|v| Bytes::copy_from_slice(v.value()))
            .unwrap_or_default())
    }

    pub(crate) fn result(&self, id: u64) -> Result<Option<Bytes>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(RESULTS).map_err(io)?;
        Ok(table
            .get(id)
            .map_err(io)?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// The job ids known for client keys, as (key, id).
    pub(crate) fn keys(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(KEYS).map_err(io)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(io)? {
            let (key, id) = entry.map_err(io)?;
            out.push((key.value().to_owned(), id.value()));
        }
        Ok(out)
    }

    /// Pending jobs, oldest first: (id, created ms), at most `limit`.
    pub(crate) fn pending(&self, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(PENDING).map_err(io)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(io)?.take(limit) {
            let (id, created) = entry.map_err(io)?;
            out.push((id.value(), created.value()));
        }
        Ok(out)
    }

    /// Pending jobs whose max age has passed at `now_ms`, at most `limit`.
    pub(crate) fn overdue(&self, now_ms: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let pending = txn.open_table(PENDING).map_err(io)?;
        let jobs = txn.open_table(JOBS).map_err(io)?;
        let mut out = Vec::new();
        for entry in pending.iter().map_err(io)? {
            let (id, _) = entry.map_err(io)?;
            let Some(record) = jobs.get(id.value()).map_err(io)? else {
                continue;
            };
            let record: JobRecord = from_json(record.value())?;
            if record.created_ms.saturating_add(record.max_age_ms) <= now_ms {
                out.push(id.value());
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The earliest moment (ms) a pending job becomes overdue.
    pub(crate) fn next_overdue(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let pending = txn.open_table(PENDING).map_err(io)?;
        let jobs = txn.open_table(JOBS).map_err(io)?;
        let mut earliest: Option<u64> = None;
        for entry in pending.iter().map_err(io)? {
            let (id, _) = entry.map_err(io)?;
            if let Some(record) = jobs.get(id.value()).map_err(io)? {
                let record: JobRecord = from_json(record.value())?;
                let due = record.created_ms.saturating_add(record.max_age_ms);
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
            }
        }
        Ok(earliest)
    }

    /// Moves pending jobs into a new flush (or, with `api == None`, marks them sent alone);
    /// returns the flush id and the jobs actually moved (those still pending).
    pub(crate) fn start_flush(
        &self,
        api: Option<&str>,
        ids: &[u64],
        now_ms: u64,
    ) -> Result<(u64, Vec<u64>), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let mut moved = Vec::with_capacity(ids.len());
        let flush = {
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
            flush
        };
        txn.commit().map_err(io)?;
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
        let returned = {
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
            returned
        };
        txn.commit().map_err(io)?;
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
    /// no longer in that flush, is left as it is. Returns the jobs ended now. When `finished`,
    /// the flush record goes too.
    pub(crate) fn complete(
        &self,
        flush: u64,
        outcomes: Vec<(u64, Outcome)>,
        finished: bool,
    ) -> Result<Vec<(u64, bool)>, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let ended = {
            let mut meta = txn.open_table(META).map_err(io)?;
            let mut jobs = txn.open_table(JOBS).map_err(io)?;
            let mut results = txn.open_table(RESULTS).map_err(io)?;
            let mut flushes = txn.open_table(FLUSHES).map_err(io)?;
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
                let ok = match outcome {
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
                        true
                    }
                    Outcome::Failed { error, at_ms } => {
                        record.state = JobState::Failed {
                            error,
                            finished_ms: at_ms,
                        };
                        counters.failed += 1;
                        false
                    }
                };
                jobs.insert(id, &to_json(&record)?[..]).map_err(io)?;
                ended.push((id, ok));
            }
            meta.insert("counters", &to_json(&counters)?[..])
                .map_err(io)?;
            if finished && flush != 0 {
                flushes.remove(flush).map_err(io)?;
            }
            ended
        };
        txn.commit().map_err(io)?;
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

    /// (pending, oldest pending's creation ms, counters).
    pub(crate) fn summary(&self) -> Result<(u64, Option<u64>, Counters), StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let pending = txn.open_table(PENDING).map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        let count = pending.len().map_err(io)?;
        let mut oldest = None;
        for entry in pending.iter().map_err(io)? {
            let (_, created) = entry.map_err(io)?;
            oldest = Some(oldest.map_or(created.value(), |o: u64| o.min(created.value())));
        }
        Ok((count, oldest, Self::counters_in(&meta)?))
    }

    /// Jobs in flight now.
    pub(crate) fn in_flight(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let jobs = txn.open_table(JOBS).map_err(io)?;
        let mut count = 0;
        for entry in jobs.iter().map_err(io)? {
            let (_, bytes) = entry.map_err(io)?;
            let record: JobRecord = from_json(bytes.value())?;
            count += u64::from(matches!(record.state, JobState::InFlight { .. }));
        }
        Ok(count)
    }
}

/// How one job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Answered {
        status: u16,
        body: Bytes,
        via: Via,
        at_ms: u64,
    },
    Failed {
        error: String,
        at_ms: u64,
    },
}
