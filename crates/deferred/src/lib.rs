//! The durable deferred queue: work that can wait, written to disk before it is acknowledged,
//! sent in bulk — through a provider's Batch API at half price, or as plain calls — and
//! answered exactly once, across crashes and restarts.
//!
//! - [`DeferredQueue::submit`] returns a [`JobId`] only once the request is durably written
//!   (redb, immediate durability). Credentials are never written: `authorization`, `x-api-key`,
//!   `api-key`, `x-goog-api-key` and cookies are dropped, and the queue's [`Transport`] or
//!   [`BatchApi`] supplies its own.
//! - A background flusher sends pending jobs every [`interval`](DeferredConfig::interval), at
//!   most [`max_batch_size`](DeferredConfig::max_batch_size) at a time, through the
//!   [`BatchApi`] if there is one ([`OpenAiBatchApi`], [`AnthropicBatchApi`]) or as plain
//!   calls. A job that waited past its max age (default 5 min) is sent alone at once.
//! - Results are written back; [`wait`](DeferredQueue::wait) awaits one,
//!   [`status`](DeferredQueue::status) polls one, [`completions`](DeferredQueue::completions)
//!   streams them as they end. An answer is seen only once it is in the store: one the store
//!   refuses (a full disk) is kept in memory, bounded by
//!   [`max_unwritten_bytes`](DeferredConfig::max_unwritten_bytes), and written again with
//!   backoff; past the bound its job is sent again instead.
//! - An ended job — answered or failed, its answer collected or not — is kept for
//!   [`retention`](DeferredConfig::retention) (default 24 h), then deleted with its request,
//!   its answer and its key by the flusher, a bounded batch per pass: the store does not grow
//!   without end, and an answer nobody collected within the retention is gone.
//! - On open, everything in flight is recovered. A batch submitted before a crash is polled
//!   again by its recorded id, or found again by its tag when the crash came between creating it
//!   and recording it, so it is never submitted twice. A plain call cut short by a crash is sent
//!   again (with the same `idempotency-key`): plain calls are at-least-once across a crash,
//!   Batch API jobs exactly once.
//! - [`snapshot`](DeferredQueue::snapshot) and [`flush`](DeferredQueue::flush) serve operators; the
//!   [`admin_router`] (feature `admin`) serves them over HTTP behind a bearer token.
//!
//! This is not a layer: it is a store and a flusher a gateway or a batch job owns. It lives in a
//! crate of its own so that micro-batching (`tollgate-batch`) does not compile redb.
//!
//! # Cargo features
//!
//! | feature | what it brings |
//! |---|---|
//! | `admin` | [`admin_router`]: the operator routes as an axum router |
//! | `serde` | `Deserialize` for [`DeferredConfig`], durations human-readable (`"24h"`, `"30s"`) |
//! | `metrics` | the queue's depth through the [`metrics`](https://docs.rs/metrics) facade (`tollgate_deferred_pending`, see `docs/metrics.md`) |
#![forbid(unsafe_code)]
// The docs name the admin router; without its feature that name is plain text, not a link.
#![cfg_attr(not(feature = "admin"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "admin")]
mod admin;
mod anthropic;
mod api;
mod config;
mod flusher;
mod metrics;
mod openai;
mod store;
#[cfg(test)]
mod tests;
mod unwritten;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, Request, StatusCode};
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio::task::JoinSet;
use tollgate_core::Clock;
use tollgate_core::credential::CREDENTIAL_HEADERS;

#[cfg(feature = "admin")]
pub use self::admin::admin_router;
pub use self::anthropic::AnthropicBatchApi;
pub use self::api::{
    BatchApi, BatchItem, BoxFuture, ItemResult, RemoteStatus, Transport, transport,
};
pub use self::config::DeferredConfig;
pub use self::openai::OpenAiBatchApi;
use self::store::{JobRecord, JobState, NewJob, Store};
pub use self::store::{StoreError, Via};

/// A job's id, unique within its queue's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// Per-job settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// Overrides the queue's max age for this job.
    pub max_age: Option<Duration>,
    /// A key of the caller's: submitting a key the queue already holds returns the existing
    /// job instead of a new one (submission becomes idempotent).
    pub key: Option<String>,
}

/// A job's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOutput {
    /// The status the request got.
    pub status: StatusCode,
    /// The response body.
    pub body: Bytes,
    /// How it was answered.
    pub via: Via,
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for a flush.
    Pending,
    /// Sent; waiting for its answer.
    InFlight,
    /// Answered.
    Done(JobOutput),
    /// Ended without an answer.
    Failed(String),
}

/// A job ended, as [`completions`](DeferredQueue::completions) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The job.
    pub id: JobId,
    /// Whether it was answered (the answer may still be an error status).
    pub answered: bool,
}

/// Why [`wait`](DeferredQueue::wait) has no answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum JobError {
    /// The job ended without an answer.
    Failed(String),
    /// No such job.
    Unknown(JobId),
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(error) => write!(f, "the job failed: {error}"),
            Self::Unknown(id) => write!(f, "no {id} in this queue"),
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for JobError {}

/// Why a request was not queued.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubmitError {
    /// The URI carries a credential (`?key=`), which would be written to disk.
    CredentialInUri,
    /// The store failed; nothing was acknowledged.
    Store(StoreError),
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CredentialInUri => f.write_str(
                "the request's URI carries a key; send it in a header the queue's transport adds",
            ),
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for SubmitError {}

/// The queue at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Jobs waiting for a flush.
    pub pending: u64,
    /// Jobs sent and not yet answered.
    pub in_flight: u64,
    /// Jobs answered.
    pub done: u64,
    /// Jobs ended without an answer.
    pub failed: u64,
    /// How long the oldest pending job has waited.
    pub oldest_age: Option<Duration>,
    /// Jobs answered through a Batch API.
    pub batched_jobs: u64,
    /// Batches submitted.
    pub batches: u64,
    /// Plain calls made.
    pub calls: u64,
    /// Upstream calls saved by batching: batched jobs minus batches.
    pub calls_saved: u64,
    /// Uploads or batch creations that failed (their jobs went back to pending).
    pub submit_failures: u64,
    /// Answers (and requeues) the store refused, kept in memory and written again later.
    pub unwritten: u64,
}

/// The header carrying a job's idempotency key on plain calls.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    /// Answers the store refused, written again later.
    pub(crate) unwritten: unwritten::Unwritten,
    pub(crate) config: DeferredConfig,
    pub(crate) transport: Transport,
    pub(crate) api: Option<Arc<dyn BatchApi>>,
    wall: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    /// Wakes the flusher (new work, a forced flush, shutdown).
    pub(crate) wake: Notify,
    pub(crate) force: std::sync::atomic::AtomicBool,
    pub(crate) stopped: std::sync::atomic::AtomicBool,
    /// Bumped whenever a job ends, for waiters.
    pub(crate) ended: watch::Sender<u64>,
    pub(crate) completions: broadcast::Sender<Completion>,
    pub(crate) calls: Arc<Semaphore>,
    /// Flushes with a task driving them.
    pub(crate) running: Mutex<HashMap<u64, ()>>,
    /// Every task of the queue, so that shutdown stops them all.
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    /// Runs `task` as one of the queue's tasks (reaping those that ended).
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        while tasks.try_join_next().is_some() {}
        if !self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            tasks.spawn(task);
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        millis((self.wall)())
    }

    /// Runs a store call on the blocking pool.
    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| StoreError::Io(format!("store task: {e}")))?
    }

    pub(crate) fn announce(&self, ended: &[(u64, bool)]) {
        if ended.is_empty() {
            return;
        }
        for &(id, answered) in ended {
            let _ = self.completions.send(Completion {
                id: JobId(id),
                answered,
            });
        }
        self.ended.send_modify(|n| *n += ended.len() as u64);
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Builds a [`DeferredQueue`].
pub struct DeferredQueueBuilder {
    path: PathBuf,
    transport: Transport,
    config: DeferredConfig,
    api: Option<Arc<dyn BatchApi>>,
    wall: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl fmt::Debug for DeferredQueueBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredQueueBuilder")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("api", &self.api.as_ref().map(|a| a.name()))
            .finish_non_exhaustive()
    }
}

impl DeferredQueueBuilder {
    /// The flush settings.
    pub fn config(mut self, config: DeferredConfig) -> Self {
        self.config = config;
        self
    }

    /// Sends flushes through a provider's Batch API (plain calls otherwise; jobs past their max
    /// age always go as plain calls).
    pub fn batch_api(mut self, api: impl BatchApi) -> Self {
        self.api = Some(Arc::new(api));
        self
    }

    /// The wall clock ages are measured with (job ages survive restarts, so they are wall-clock
    /// times); a paused-time test passes a clock that follows `tokio::time`.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.wall = Arc::new(move || clock.wall());
        self
    }

    /// Opens (or creates) the store, recovers what was in flight, and starts the flusher on the
    /// current runtime.
    ///
    /// # Errors
    ///
    /// The store cannot be opened — an existing file that is not a queue (corrupted, truncated)
    /// is reported and left untouched — or the config is invalid.
    pub async fn open(self) -> Result<DeferredQueue, StoreError> {
        self.config
            .validate()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let path = self.path.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .map_err(|e| StoreError::Io(format!("store task: {e}")))??;
        let (ended, _) = watch::channel(0);
        let (completions, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Arc::new(store),
            unwritten: unwritten::Unwritten::default(),
            calls: Arc::new(Semaphore::new(self.config.concurrency)),
            config: self.config,
            transport: self.transport,
            api: self.api,
            wall: self.wall,
            wake: Notify::new(),
            force: std::sync::atomic::AtomicBool::new(false),
            stopped: std::sync::atomic::AtomicBool::new(false),
            ended,
            completions,
            running: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        });
        let recovered = flusher::recover(&shared).await?;
        if recovered > 0 {
            tracing::info!(jobs = recovered, "deferred queue recovered unanswered jobs");
        }
        shared.spawn(flusher::run(shared.clone()));
        Ok(DeferredQueue { shared })
    }
}

/// The durable deferred queue; see the [module docs](self).
///
/// # Clone
///
/// Clones share the queue.
#[derive(Clone)]
pub struct DeferredQueue {
    shared: Arc<Shared>,
}

impl fmt::Debug for DeferredQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredQueue")
            .field("store", &self.shared.store)
            .field("config", &self.shared.config)
            .field("api", &self.shared.api.as_ref().map(|a| a.name()))
            .finish()
    }
}

impl DeferredQueue {
    /// The queue `config` describes, stored at its [`store`](DeferredConfig::store), sending
    /// through `transport`.
    ///
    /// # Errors
    ///
    /// A setting that is not usable, or no `store`.
    pub fn configured(
        config: DeferredConfig,
        transport: Transport,
    ) -> Result<DeferredQueueBuilder, tollgate_core::config::ConfigError> {
        config.validate()?;
        let path = config.store.clone().ok_or_else(|| {
            tollgate_core::config::ConfigError::invalid(
                "store",
                "is missing: where the queue keeps its jobs (a file path)",
            )
        })?;
        Ok(Self::builder(path, transport).config(config))
    }

    /// A queue stored at `path`, sending through `transport` (see [`transport()`]).
    pub fn builder(path: impl Into<PathBuf>, transport: Transport) -> DeferredQueueBuilder {
        DeferredQueueBuilder {
            path: path.into(),
            transport,
            config: DeferredConfig::default(),
            api: None,
            wall: Arc::new(SystemTime::now),
        }
    }

    /// Queues a request; returns once it is durably written.
    ///
    /// # Errors
    ///
    /// The store failed (nothing was queued), or the URI carries a key.
    pub async fn submit(&self, request: Request<Bytes>) -> Result<JobId, SubmitError> {
        let mut ids = self
            .submit_many(vec![(request, JobOptions::default())])
            .await?;
        Ok(ids.remove(0))
    }

    /// Queues a request with its own options.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_with(
        &self,
        request: Request<Bytes>,
        options: JobOptions,
    ) -> Result<JobId, SubmitError> {
        let mut ids = self.submit_many(vec![(request, options)]).await?;
        Ok(ids.remove(0))
    }

    /// Queues many requests in one durable write (one disk sync for all); the ids come back in
    /// order.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit); on an error none of them was queued.
    pub async fn submit_many(
        &self,
        requests: Vec<(Request<Bytes>, JobOptions)>,
    ) -> Result<Vec<JobId>, SubmitError> {
        let now = self.shared.now_ms();
        let mut jobs = Vec::with_capacity(requests.len());
        for (request, options) in requests {
            let (parts, body) = request.into_parts();
            if parts.uri.query().is_some_and(|q| {
                q.split('&')
                    .any(|pair| pair.split('=').next() == Some("key"))
            }) {
                return Err(SubmitError::CredentialInUri);
            }
            let headers = parts
                .headers
                .iter()
                .filter(|(name, _)| !CREDENTIAL_HEADERS.contains(&name.as_str()))
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect();
            let max_age = match (self.shared.config.deferred, options.max_age) {
                (false, _) => Duration::ZERO,
                (true, Some(age)) => age,
                (true, None) => self.shared.config.max_age,
            };
            jobs.push(NewJob {
                record: JobRecord {
                    created_ms: now,
                    max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
                    key: options.key,
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers,
                    attempts: 0,
                    state: JobState::Pending,
                },
                body,
            });
        }
        let ids = self
            .shared
            .with_store(move |store| store.insert(jobs))
            .await
            .map_err(SubmitError::Store)?;
        self.shared.wake.notify_one();
        Ok(ids.into_iter().map(JobId).collect())
    }

    /// Where a job is (`None`: no such job).
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn status(&self, id: JobId) -> Result<Option<JobStatus>, StoreError> {
        self.shared
            .with_store(move |store| {
                let Some(record) = store.job(id.0)? else {
                    return Ok(None);
                };
                Ok(Some(match record.state {
                    JobState::Pending => JobStatus::Pending,
                    JobState::InFlight { .. } => JobStatus::InFlight,
                    JobState::Done { status, via, .. } => JobStatus::Done(JobOutput {
                        status: StatusCode::from_u16(status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        body: store.result(id.0)?.unwrap_or_default(),
                        via,
                    }),
                    JobState::Failed { error, .. } => JobStatus::Failed(error),
                }))
            })
            .await
    }

    /// Waits for a job's answer.
    ///
    /// # Errors
    ///
    /// The job failed or does not exist, or the store failed.
    pub async fn wait(&self, id: JobId) -> Result<JobOutput, JobError> {
        let mut ended = self.shared.ended.subscribe();
        loop {
            match self.status(id).await.map_err(JobError::Store)? {
                None => return Err(JobError::Unknown(id)),
                Some(JobStatus::Done(output)) => return Ok(output),
                Some(JobStatus::Failed(error)) => return Err(JobError::Failed(error)),
                Some(_) => {
                    if ended.changed().await.is_err() {
                        return Err(JobError::Store(StoreError::Io(
                            "the queue was dropped".into(),
                        )));
                    }
                }
            }
        }
    }

    /// Every job that ends from now on, as it ends.
    pub fn completions(&self) -> broadcast::Receiver<Completion> {
        self.shared.completions.subscribe()
    }

    /// The jobs submitted with a key, as (key, id).
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn keyed_jobs(&self) -> Result<Vec<(String, JobId)>, StoreError> {
        let keys = self.shared.with_store(|store| store.keys()).await?;
        Ok(keys.into_iter().map(|(k, id)| (k, JobId(id))).collect())
    }

    /// The queue at a glance.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn snapshot(&self) -> Result<QueueStats, StoreError> {
        let now = self.shared.now_ms();
        let unwritten = self.shared.unwritten.len() as u64;
        self.shared
            .with_store(move |store| {
                let (pending, oldest, counters) = store.summary()?;
                Ok(QueueStats {
                    pending,
                    in_flight: store.in_flight()?,
                    done: counters.done,
                    failed: counters.failed,
                    oldest_age: oldest.map(|at| Duration::from_millis(now.saturating_sub(at))),
                    batched_jobs: counters.batched_jobs,
                    batches: counters.batches,
                    calls: counters.calls,
                    calls_saved: counters.batched_jobs.saturating_sub(counters.batches),
                    submit_failures: counters.submit_failures,
                    unwritten,
                })
            })
            .await
    }

    /// Flushes now, whatever the interval says.
    pub fn flush(&self) {
        self.shared
            .force
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// Stops the flusher and every call and batch it drives, where they are: what was in
    /// flight stays recorded and resumes on the next open, as after a crash. The store closes
    /// when the last clone of the queue is dropped.
    pub async fn shutdown(&self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// The header names that never reach the store.
pub fn is_secret_header(name: &HeaderName) -> bool {
    CREDENTIAL_HEADERS.contains(&name.as_str())
}
