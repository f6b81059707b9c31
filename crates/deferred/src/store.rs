//! The queue's embedded store (redb): every job, its request and result, and every flush.
//!
//! All calls are synchronous and short; the queue runs them on the blocking pool. Every write
//! is one transaction committed with immediate durability, so what a call returned survives a
//! crash.

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

mod flush;
mod retention;

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
/// Ended jobs, oldest first: (end ms since the epoch, id), for the retention.
const ENDED: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("ended");

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
    /// Writes of answers to refuse, as a full disk would: a test hook.
    #[cfg(test)]
    pub(crate) refuse_answers: std::sync::atomic::AtomicU32,
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

/// Jobs ended by a write, each with whether it was answered.
pub(crate) type Ended = Vec<(u64, bool)>;

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
        retention::index_ended(&txn)?;
        txn.commit().map_err(io)?;
        Ok(Self {
            db,
            id,
            #[cfg(test)]
            refuse_answers: std::sync::atomic::AtomicU32::new(0),
        })
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

impl Outcome {
    /// The bytes it holds in memory, about.
    pub(crate) fn size(&self) -> usize {
        64 + match self {
            Self::Answered { body, .. } => body.len(),
            Self::Failed { error, .. } => error.len(),
        }
    }
}
