//! The flusher: sends overdue jobs alone, flushes pending jobs every interval, and drives each
//! Batch API flush from upload to results, recording every step.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use tower::ServiceExt;

use super::api::{BatchItem, ItemResult, RemoteStatus};
use super::store::{FlushRecord, JobRecord, Outcome, Stage, StoreError, Via};
use super::unwritten::{self, Entry};
use super::{IDEMPOTENCY_HEADER, Shared};
use crate::metrics;

/// Overdue jobs taken per round.
const OVERDUE_ROUND: usize = 1_000;

/// Ended jobs deleted per transaction, and per pass of the flusher: a long backlog (a first
/// start with retention on an old store) is worked through pass by pass, each short.
const PURGE_BATCH: usize = 1_000;

/// Tries at uploading and creating one batch before its jobs go back to pending.
const SUBMIT_TRIES: u32 = 3;

/// Recovers what was in flight when the store was last closed: jobs sent alone go back to
/// pending, and every recorded flush gets a task again. Returns the jobs recovered.
pub(crate) async fn recover(shared: &Arc<Shared>) -> Result<usize, StoreError> {
    let alone = shared.with_store(|store| store.recover_alone()).await?;
    let flushes = shared.with_store(|store| store.flushes()).await?;
    let mut recovered = alone.len();
    for (id, record) in flushes {
        recovered += record.jobs.len();
        if shared
            .api
            .as_ref()
            .is_some_and(|api| api.name() == record.api)
        {
            spawn_remote(shared, id, record);
        } else {
            // Recorded by another kind of queue (or before the API was removed): send the
            // jobs again the way this queue sends.
            shared
                .with_store(move |store| store.dissolve(id, false))
                .await?;
        }
    }
    Ok(recovered)
}

/// The flusher's loop.
pub(crate) async fn run(shared: Arc<Shared>) {
    let interval_ms = u64::try_from(shared.config.interval.as_millis()).unwrap_or(u64::MAX);
    let retention_ms = u64::try_from(shared.config.retention.as_millis()).unwrap_or(u64::MAX);
    let mut next_flush = shared.now_ms().saturating_add(interval_ms);
    while !shared.stopped.load(Ordering::SeqCst) {
        if let Err(error) = round(&shared, &mut next_flush, interval_ms).await {
            tracing::warn!(%error, "deferred queue round failed; retrying");
        }
        unwritten::retry(&shared).await;
        let purged_all = match purge(&shared, retention_ms).await {
            Ok(purged) => purged < PURGE_BATCH,
            Err(error) => {
                tracing::warn!(%error, "deleting ended jobs past their retention failed; retrying");
                true
            }
        };
        // One read of the store per round, only when someone records it.
        if metrics::ENABLED
            && let Ok((pending, ..)) = shared.with_store(|store| store.summary()).await
        {
            metrics::pending(pending);
        }
        let now = shared.now_ms();
        let next_due = shared
            .with_store(|store| store.next_overdue())
            .await
            .ok()
            .flatten();
        // A job that ends while the flusher sleeps expires a retention from now or later:
        // waking by then is never late for it.
        let next_expiry = shared
            .with_store(|store| store.first_ended())
            .await
            .ok()
            .flatten()
            .unwrap_or(now)
            .saturating_add(retention_ms);
        let wake_at = [next_due, Some(next_expiry), shared.unwritten.retry_at()]
            .into_iter()
            .flatten()
            .fold(next_flush, u64::min);
        let wake_at = if purged_all { wake_at } else { now };
        let sleep = Duration::from_millis(wake_at.saturating_sub(now).max(1));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// Deletes up to a batch of the jobs that ended more than `retention_ms` ago; how many went.
async fn purge(shared: &Arc<Shared>, retention_ms: u64) -> Result<usize, StoreError> {
    let before = shared.now_ms().saturating_sub(retention_ms);
    let purged = shared
        .with_store(move |store| store.purge(before, PURGE_BATCH))
        .await?;
    if purged > 0 {
        tracing::debug!(jobs = purged, "deleted ended jobs past their retention");
    }
    Ok(purged)
}

async fn round(
    shared: &Arc<Shared>,
    next_flush: &mut u64,
    interval_ms: u64,
) -> Result<(), StoreError> {
    let now = shared.now_ms();
    // Overdue jobs go alone, now.
    loop {
        let overdue = shared
            .with_store(move |store| store.overdue(now, OVERDUE_ROUND))
            .await?;
        if overdue.is_empty() {
            break;
        }
        let (_, moved) = shared
            .with_store(move |store| store.start_flush(None, &overdue, now))
            .await?;
        for id in moved {
            spawn_alone(shared, id);
        }
    }
    let forced = shared.force.swap(false, Ordering::SeqCst);
    if forced || now >= *next_flush {
        *next_flush = now.saturating_add(interval_ms);
        flush(shared, now).await?;
    }
    Ok(())
}

/// Takes up to `max_batch_size` pending jobs: one Batch API flush (jobs for one endpoint, as
/// batches require), or plain calls.
async fn flush(shared: &Arc<Shared>, now: u64) -> Result<(), StoreError> {
    let max = shared.config.max_batch_size;
    let Some(api) = shared.api.clone() else {
        let pending = shared.with_store(move |store| store.pending(max)).await?;
        let ids: Vec<u64> = pending.into_iter().map(|(id, _)| id).collect();
        let (_, moved) = shared
            .with_store(move |store| store.start_flush(None, &ids, now))
            .await?;
        for id in moved {
            spawn_alone(shared, id);
        }
        return Ok(());
    };
    // Every pending job, by endpoint, oldest endpoint first.
    let pending = shared.with_store(|store| store.pending(usize::MAX)).await?;
    let chosen = shared
        .with_store(move |store| {
            let mut path: Option<String> = None;
            let mut chosen = Vec::new();
            for (id, _) in pending {
                let Some(record) = store.job(id)? else {
                    continue;
                };
                let this = path_of(&record);
                match &path {
                    None => path = Some(this),
                    Some(p) if *p != this => continue,
                    Some(_) => {}
                }
                chosen.push(id);
                if chosen.len() >= max {
                    break;
                }
            }
            Ok(chosen)
        })
        .await?;
    if chosen.is_empty() {
        return Ok(());
    }
    let name = api.name();
    let (flush, moved) = shared
        .with_store(move |store| store.start_flush(Some(name), &chosen, now))
        .await?;
    let record = FlushRecord {
        api: name.to_owned(),
        jobs: moved,
        stage: Stage::Created,
        created_ms: now,
    };
    spawn_remote(shared, flush, record);
    Ok(())
}

fn path_of(record: &JobRecord) -> String {
    record
        .uri
        .parse::<Uri>()
        .map_or_else(|_| record.uri.clone(), |uri| uri.path().to_owned())
}

/// The stored request, ready to send again.
fn rebuild(
    store_id: u64,
    id: u64,
    record: &JobRecord,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder()
        .method(Method::from_bytes(record.method.as_bytes()).map_err(|e| e.to_string())?)
        .uri(&record.uri);
    for (name, value) in &record.headers {
        request = request.header(name, value);
    }
    let mut request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        HeaderName::from_static(IDEMPOTENCY_HEADER),
        HeaderValue::from_str(&format!("tollgate-{store_id:x}-{id}")).map_err(|e| e.to_string())?,
    );
    Ok(request)
}

/// Sends one job as a plain call and records its answer.
pub(super) fn spawn_alone(shared: &Arc<Shared>, id: u64) {
    let task = shared.clone();
    shared.spawn(async move {
        let shared = task;
        let Ok(_permit) = shared.calls.clone().acquire_owned().await else {
            return;
        };
        let store_id = shared.store.id;
        let loaded = shared
            .with_store(move |store| Ok((store.job(id)?, store.body(id)?)))
            .await;
        let outcome = match loaded {
            Ok((Some(record), body)) => match rebuild(store_id, id, &record, body) {
                Ok(request) => match shared.transport.clone().oneshot(request).await {
                    Ok(response) => Outcome::Answered {
                        status: response.status().as_u16(),
                        body: response.into_body(),
                        via: Via::Call,
                        at_ms: shared.now_ms(),
                    },
                    Err(error) => Outcome::Failed {
                        error: error.to_string(),
                        at_ms: shared.now_ms(),
                    },
                },
                Err(error) => Outcome::Failed {
                    error: format!("stored request unusable: {error}"),
                    at_ms: shared.now_ms(),
                },
            },
            Ok((None, _)) => return,
            Err(error) => {
                tracing::warn!(%error, job = id, "could not load a job; it stays in flight until restart");
                return;
            }
        };
        let written = outcome.clone();
        match shared
            .with_store(move |store| store.complete(0, vec![(id, written)]))
            .await
        {
            Ok(ended) => shared.announce(&ended),
            Err(error) => unwritten::refused(&shared, Entry::Answer { id, outcome }, &error),
        }
    });
}

pub(super) fn spawn_remote(shared: &Arc<Shared>, flush: u64, record: FlushRecord) {
    {
        let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.insert(flush, ()).is_some() {
            return;
        }
    }
    let task = shared.clone();
    shared.spawn(async move {
        let shared = task;
        drive(&shared, flush, record).await;
        shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&flush);
        shared.wake.notify_one();
    });
}

/// Takes one Batch API flush from wherever it got to, to its results.
async fn drive(shared: &Arc<Shared>, flush: u64, record: FlushRecord) {
    let Some(api) = shared.api.clone() else {
        return;
    };
    let poll = shared.config.poll_interval;
    let tag = format!("tollgate-{:x}-{flush}", shared.store.id);
    let batch_id = match record.stage.clone() {
        Stage::Submitted { batch_id } => batch_id,
        mut stage => {
            let mut tries = 0;
            loop {
                // Each try looks for the batch first: a create whose answer was lost may
                // have made it.
                match submit(shared, &*api, flush, &tag, &record, stage.clone()).await {
                    Ok(batch_id) => break batch_id,
                    Err(error) => {
                        tries += 1;
                        let _ = shared
                            .with_store(|store| store.count_submit_failure())
                            .await;
                        if tries >= SUBMIT_TRIES {
                            tracing::warn!(%error, flush, "batch submission failed; its jobs wait for the next flush");
                            let _ = shared
                                .with_store(move |store| store.dissolve(flush, false))
                                .await;
                            return;
                        }
                        tracing::warn!(%error, flush, "batch submission failed; trying again");
                        tokio::time::sleep(poll).await;
                        let flushes = shared.with_store(|store| store.flushes()).await;
                        if let Some(now) = flushes.ok().and_then(|mut f| f.remove(&flush)) {
                            stage = now.stage;
                        }
                    }
                }
            }
        }
    };
    // Poll until it ends.
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        match api.status(&batch_id).await {
            Ok(RemoteStatus::Ended) => break,
            Ok(RemoteStatus::Running) => {}
            Err(error) => tracing::warn!(%error, flush, "polling a batch failed; polling again"),
        }
        tokio::time::sleep(poll).await;
    }
    let results = loop {
        match api.results(&batch_id).await {
            Ok(results) => break results,
            Err(error) => {
                tracing::warn!(%error, flush, "reading a batch's results failed; trying again");
                if shared.stopped.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(poll).await;
            }
        }
    };
    let at_ms = shared.now_ms();
    let (mut answered, mut not_run) = (Vec::new(), Vec::new());
    for (custom_id, result) in results {
        let Some(id) = job_of(&custom_id) else {
            continue;
        };
        match result {
            ItemResult::Answered { status, body } => answered.push((
                id,
                Outcome::Answered {
                    status,
                    body,
                    via: Via::BatchApi,
                    at_ms,
                },
            )),
            ItemResult::Failed(error) => answered.push((id, Outcome::Failed { error, at_ms })),
            ItemResult::NotRun => not_run.push(id),
        }
    }
    let max_attempts = shared.config.max_attempts;
    let (written, unrun) = (answered.clone(), not_run.clone());
    // What the batch did not answer goes back to pending, and the flush is done.
    let settled = shared
        .with_store(move |store| store.settle(flush, written, &unrun, max_attempts, at_ms))
        .await;
    match settled {
        Ok((ended, alone)) => {
            shared.announce(&ended);
            for id in alone {
                spawn_alone(shared, id);
            }
        }
        Err(error) => {
            let entry = Entry::Batch {
                flush,
                answered,
                not_run,
                at_ms,
            };
            unwritten::refused(shared, entry, &error);
        }
    }
}

/// The job a custom id names (`job-{id}`).
fn job_of(custom_id: &str) -> Option<u64> {
    custom_id.strip_prefix("job-")?.parse().ok()
}

/// Uploads and creates the batch, re-attaching to one a crash left behind.
async fn submit(
    shared: &Arc<Shared>,
    api: &dyn super::BatchApi,
    flush: u64,
    tag: &str,
    record: &FlushRecord,
    stage: Stage,
) -> Result<String, tollgate_core::BoxError> {
    if let Some(batch_id) = api.find(tag).await? {
        tracing::info!(flush, batch = %batch_id, "re-attached to a batch submitted before a restart");
        let id = batch_id.clone();
        shared
            .with_store(move |store| store.set_stage(flush, Stage::Submitted { batch_id: id }))
            .await?;
        return Ok(batch_id);
    }
    let jobs = record.jobs.clone();
    let items = shared
        .with_store(move |store| {
            let mut items = Vec::with_capacity(jobs.len());
            for id in jobs {
                if let Some(record) = store.job(id)? {
                    items.push(BatchItem {
                        custom_id: format!("job-{id}"),
                        path: path_of(&record),
                        body: store.body(id)?,
                    });
                }
            }
            Ok(items)
        })
        .await?;
    let file_id = match stage {
        Stage::Uploaded { file_id } => Some(file_id),
        _ => {
            let file_id = api.upload(tag, &items).await?;
            if let Some(file_id) = &file_id {
                let file_id = file_id.clone();
                shared
                    .with_store(move |store| store.set_stage(flush, Stage::Uploaded { file_id }))
                    .await?;
            }
            file_id
        }
    };
    let batch_id = api.create(tag, file_id.as_deref(), &items).await?;
    let id = batch_id.clone();
    shared
        .with_store(move |store| store.set_stage(flush, Stage::Submitted { batch_id: id }))
        .await?;
    Ok(batch_id)
}
