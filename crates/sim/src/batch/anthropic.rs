//! Anthropic's Message Batches: inline `{custom_id, params}` requests, `in_progress` until the
//! completion delay has passed (or the batch expired), then `ended` with JSONL results in
//! request order (listing is in `list.rs`). Each request's params are checked only when it
//! runs, so a bad one is `errored` on its own; those the batch expired before are `expired`.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;
use serde_json::{Value, json};
use tokio::time::Instant;
use tollgate_core::BoxError;

use super::run::{Ending, Tally};
use super::store::{Phase, Timeline};
use super::summary::{BatchApi, BatchSummary};
use super::{bad_request, json_ok, missing, read_json, respond, rfc3339, run, unix};
use crate::body::SimBody;
use crate::dialect::{Dialect, Refuse};
use crate::respond::refuse;
use crate::state::Shared;
use crate::stats::LogEntry;

/// The most requests in one message batch.
const MAX_REQUESTS: usize = 100_000;
/// The largest create request.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// One message batch.
pub(super) struct MessageBatch {
    pub(super) ordinal: u64,
    timeline: Timeline,
    /// `(custom_id, params)`, in request order.
    requests: Arc<Vec<(String, Value)>>,
    outcome: Option<Outcome>,
}

/// The results of an ended batch.
struct Outcome {
    tally: Tally,
    results: Bytes,
}

impl MessageBatch {
    /// Its `processing_status` at `now`.
    fn status(&self, now: Instant) -> &'static str {
        match self.timeline.phase(now) {
            Phase::Validating | Phase::InProgress => "in_progress",
            Phase::Canceling => "canceling",
            Phase::Done | Phase::Canceled | Phase::Expired => "ended",
        }
    }

    /// What [`SimService::batches`](crate::SimService::batches) shows of it, with its number.
    pub(super) fn summary(&self, id: &str, now: Instant) -> (u64, BatchSummary) {
        let custom_ids = self.requests.iter().map(|(custom_id, _)| custom_id.clone());
        let summary = BatchSummary::new(
            id.to_owned(),
            BatchApi::Anthropic,
            self.status(now),
            custom_ids.collect(),
        );
        (self.ordinal, summary)
    }

    /// The `message_batch` object at `now`.
    pub(super) fn object(&self, id: &str, now: Instant) -> Value {
        let t = &self.timeline;
        let status = self.status(now);
        let ended_at = t.ended_at(now);
        let counts = match &self.outcome {
            Some(Outcome { tally: t, .. }) => json!({"processing": 0, "succeeded": t.succeeded,
                "errored": t.failed, "canceled": t.canceled, "expired": t.expired}),
            None => json!({"processing": self.requests.len(), "succeeded": 0, "errored": 0,
                "canceled": 0, "expired": 0}),
        };
        let results_url = (status == "ended").then(|| format!("/v1/messages/batches/{id}/results"));
        json!({
            "id": id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": ended_at.map(rfc3339),
            "created_at": rfc3339(t.created_at()),
            "expires_at": rfc3339(t.expires_at()),
            "archived_at": null,
            "cancel_initiated_at": t.cancel_initiated_at().map(rfc3339),
            "results_url": results_url,
        })
    }
}

/// `POST /v1/messages/batches` (a key out of credit gets its 400 here).
pub(super) async fn create<B>(
    shared: &Arc<Shared>,
    quota_exhausted: bool,
    body: B,
    entry: &mut LogEntry,
) -> Response<SimBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let dialect = Dialect::Anthropic;
    if quota_exhausted {
        return refuse(
            shared,
            dialect,
            Refuse::QuotaExhausted,
            entry,
            HeaderMap::new(),
        );
    }
    let parsed = read_json(body, MAX_BODY_BYTES)
        .await
        .and_then(|json| requests(json).map_err(Refuse::BadRequest));
    let requests = match parsed {
        Ok(requests) => requests,
        Err(refusal) => return refuse(shared, dialect, refusal, entry, HeaderMap::new()),
    };
    let mut models = requests
        .iter()
        .map(|(_, p)| p.get("model").and_then(Value::as_str));
    let first = models.next().flatten();
    if models.all(|m| m == first) {
        entry.model = first.map(str::to_owned);
    }
    let now = Instant::now();
    let id = {
        let mut state = shared.lock();
        let store = &mut state.batches;
        let ordinal = store.next_batch();
        let id = format!("msgbatch_sim{ordinal:016}");
        let batch = MessageBatch {
            ordinal,
            timeline: Timeline::new(shared, now),
            requests: Arc::new(requests),
            outcome: None,
        };
        store.message_batches.insert(id.clone(), batch);
        id
    };
    retrieve(shared, &id, entry, now)
}

/// The `(custom_id, params)` pairs of a create request, checked as Anthropic checks them.
fn requests(mut json: Value) -> Result<Vec<(String, Value)>, String> {
    let items = match json.get_mut("requests").map(Value::take) {
        Some(Value::Array(items)) => items,
        Some(_) => return Err("requests: Input should be a valid list".into()),
        None => return Err("requests: Field required".into()),
    };
    if items.is_empty() || items.len() > MAX_REQUESTS {
        return Err(format!(
            "requests: List should have between 1 and {MAX_REQUESTS} items, not {}",
            items.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut requests = Vec::with_capacity(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
        let custom_id = match item.get("custom_id") {
            Some(Value::String(id)) if valid_custom_id(id) => id.clone(),
            _ => {
                return Err(format!(
                    "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                ));
            }
        };
        let params = match item.get_mut("params").map(Value::take) {
            Some(params @ Value::Object(_)) => params,
            _ => {
                return Err(format!(
                    "requests.{i}.params: Input should be a valid dictionary"
                ));
            }
        };
        if !seen.insert(custom_id.clone()) {
            return Err(format!(
                "requests.{i}.custom_id: '{custom_id}' is used more than once; custom_id values must be unique within a batch"
            ));
        }
        requests.push((custom_id, params));
    }
    Ok(requests)
}

fn valid_custom_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `GET /v1/messages/batches/{id}`: settles a batch that is due, then shows it.
pub(super) fn retrieve(
    shared: &Shared,
    id: &str,
    entry: &mut LogEntry,
    now: Instant,
) -> Response<SimBody> {
    settle(shared, id, now);
    let object = shared
        .lock()
        .batches
        .message_batches
        .get(id)
        .map(|b| b.object(id, now));
    match object {
        Some(object) => json_ok(shared, Dialect::Anthropic, entry.seq, &object),
        None => not_found(shared, id, entry),
    }
}

/// `GET /v1/messages/batches/{id}/results`: the JSONL once ended, a 400 before.
pub(super) fn results(
    shared: &Shared,
    id: &str,
    entry: &mut LogEntry,
    now: Instant,
) -> Response<SimBody> {
    settle(shared, id, now);
    let results = shared
        .lock()
        .batches
        .message_batches
        .get(id)
        .map(|b| b.outcome.as_ref().map(|o| o.results.clone()));
    match results {
        None => not_found(shared, id, entry),
        Some(None) => {
            let message = format!(
                "Message batch {id} is still processing; its results are available once its processing_status is 'ended'."
            );
            bad_request(shared, Dialect::Anthropic, entry, message)
        }
        Some(Some(bytes)) => respond(
            shared,
            Dialect::Anthropic,
            entry.seq,
            StatusCode::OK,
            "application/binary",
            bytes,
        ),
    }
}

/// `POST /v1/messages/batches/{id}/cancel`: `canceling`, then `ended` with every request
/// `canceled`.
pub(super) fn cancel(
    shared: &Shared,
    id: &str,
    entry: &mut LogEntry,
    now: Instant,
) -> Response<SimBody> {
    let canceled = shared
        .lock()
        .batches
        .message_batches
        .get_mut(id)
        .map(|batch| {
            let canceling = batch.timeline.phase(now) == Phase::Canceling;
            (canceling || batch.timeline.cancel(now)).then(|| batch.object(id, now))
        });
    match canceled {
        None => not_found(shared, id, entry),
        Some(Some(object)) => json_ok(shared, Dialect::Anthropic, entry.seq, &object),
        Some(None) => {
            let message = format!("Message batch {id} has already ended and cannot be canceled.");
            bad_request(shared, Dialect::Anthropic, entry, message)
        }
    }
}

fn not_found(shared: &Shared, id: &str, entry: &mut LogEntry) -> Response<SimBody> {
    let message = format!("Message batch {id} not found.");
    missing(shared, Dialect::Anthropic, entry, &message)
}

/// Computes the results of a batch that has just ended, outside the lock; the first to store
/// them wins (any other computed the same bytes).
pub(super) fn settle(shared: &Shared, id: &str, now: Instant) {
    let job = {
        let state = shared.lock();
        state.batches.message_batches.get(id).and_then(|batch| {
            let t = &batch.timeline;
            let ended = t.ended_at(now).filter(|_| batch.outcome.is_none())?;
            let ending = match t.phase(now) {
                Phase::Canceled => Ending::Canceled,
                Phase::Expired => Ending::Expired(t.processed(batch.requests.len())),
                _ => Ending::Completed,
            };
            Some((batch.ordinal, batch.requests.clone(), unix(ended), ending))
        })
    };
    let Some((ordinal, requests, created, ending)) = job else {
        return;
    };
    let (tally, results) = run::message_batch(shared, ordinal, &requests, created, ending);
    let outcome = Outcome {
        tally,
        results: Bytes::from(results),
    };
    let mut state = shared.lock();
    if let Some(batch) = state.batches.message_batches.get_mut(id)
        && batch.outcome.is_none()
    {
        batch.outcome = Some(outcome);
    }
}
