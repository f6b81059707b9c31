//! OpenAI's Batch API: create a batch from an uploaded file, poll it through `validating`,
//! `in_progress` and `completed` (or `expired`), cancel it (listing is in `list.rs`). Successful
//! results go to the output file, refused and expired requests to the error file, both in input
//! order.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::Body;
use serde_json::{Value, json};
use tokio::time::Instant;
use tollgate_core::BoxError;

use super::jsonl::Input;
use super::run::Tally;
use super::store::{Phase, StoredFile, Timeline};
use super::summary::{BatchApi, BatchSummary};
use super::{bad_request, files, json_ok, missing, read_json, run, unix};
use crate::body::SimBody;
use crate::dialect::{Dialect, Refuse};
use crate::respond::refuse;
use crate::state::Shared;
use crate::stats::LogEntry;

/// The endpoints a batch may target.
const ENDPOINTS: [&str; 2] = ["/v1/chat/completions", "/v1/embeddings"];

/// One OpenAI batch.
pub(super) struct Batch {
    id: String,
    pub(super) ordinal: u64,
    timeline: Timeline,
    endpoint: String,
    input_file_id: String,
    input: Arc<Input>,
    metadata: Value,
    /// Why validation fails (a line for another endpoint): the batch ends `failed`.
    errors: Option<Value>,
    outcome: Option<Outcome>,
}

/// The results of a completed batch.
struct Outcome {
    tally: Tally,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
}

impl Batch {
    fn status(&self, now: Instant) -> &'static str {
        let validated = || self.timeline.validated_at(now).is_some();
        match (self.timeline.phase(now), self.errors.is_some()) {
            (Phase::Validating, _) => "validating",
            (Phase::Canceling, _) => "cancelling",
            (Phase::Canceled, _) => "cancelled",
            (Phase::InProgress | Phase::Done, true) => "failed",
            // A batch that failed validation stays failed; one still validating expires.
            (Phase::Expired, true) if validated() => "failed",
            (Phase::Expired, _) => "expired",
            (Phase::InProgress, false) => "in_progress",
            (Phase::Done, false) => "completed",
        }
    }

    /// What [`SimService::batches`](crate::SimService::batches) shows of it, with its number.
    pub(super) fn summary(&self, now: Instant) -> (u64, BatchSummary) {
        let custom_ids = self.input.requests.iter().map(|r| r.custom_id.clone());
        let summary = BatchSummary::new(
            self.id.clone(),
            BatchApi::OpenAi,
            self.status(now),
            custom_ids.collect(),
        );
        (self.ordinal, summary)
    }

    /// The `batch` object at `now`.
    pub(super) fn object(&self, now: Instant) -> Value {
        let t = &self.timeline;
        let at = |time: Option<std::time::SystemTime>| time.map(unix);
        let validated = at(t.validated_at(now));
        let (in_progress_at, failed_at) = match self.errors {
            Some(_) => (None, validated),
            None => (validated, None),
        };
        let completed_at = at(t.completed_at(now)).filter(|_| self.errors.is_none());
        let status = self.status(now);
        let expired_at = at(t.expired_at(now)).filter(|_| status == "expired");
        let outcome = self.outcome.as_ref();
        let count = |f: fn(&Tally) -> u64| outcome.map_or(0, |o| f(&o.tally));
        let (input_tokens, output_tokens) = (count(|t| t.input_tokens), count(|t| t.output_tokens));
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.input.model,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": outcome.and_then(|o| o.output_file_id.clone()),
            "error_file_id": outcome.and_then(|o| o.error_file_id.clone()),
            "created_at": unix(t.created_at()),
            "in_progress_at": in_progress_at,
            "expires_at": unix(t.expires_at()),
            "finalizing_at": completed_at,
            "completed_at": completed_at,
            "failed_at": failed_at,
            "expired_at": expired_at,
            "cancelling_at": at(t.cancel_initiated_at()),
            "cancelled_at": at(t.canceled_at(now)),
            "request_counts": {
                "total": self.input.requests.len(),
                "completed": count(|t| t.succeeded),
                // Every line of the error file: refused, or expired before it ran.
                "failed": count(|t| t.failed + t.expired),
            },
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": self.metadata,
        })
    }
}

/// `POST /v1/batches` (a key with an exhausted quota gets its 429 here).
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
    let dialect = Dialect::OpenAi;
    if quota_exhausted {
        return refuse(
            shared,
            dialect,
            Refuse::QuotaExhausted,
            entry,
            HeaderMap::new(),
        );
    }
    let request = read_json(body, shared.config.max_body_bytes)
        .await
        .and_then(|json| parameters(&json).map_err(Refuse::BadRequest));
    let (input_file_id, endpoint, metadata) = match request {
        Ok(request) => request,
        Err(refusal) => return refuse(shared, dialect, refusal, entry, HeaderMap::new()),
    };
    let now = Instant::now();
    let input = {
        let state = shared.lock();
        state
            .batches
            .files
            .get(&input_file_id)
            .map(|file| (file.purpose, file.input.clone()))
    };
    let input = match input {
        None => return files::not_found(shared, &input_file_id, entry),
        Some((_, Some(input))) => input,
        Some((purpose, None)) => {
            let message = format!(
                "The file {input_file_id} has purpose '{purpose}'; a batch needs a file uploaded with purpose 'batch'."
            );
            return bad_request(shared, dialect, entry, message);
        }
    };
    entry.model.clone_from(&input.model);
    let errors = input.requests.iter().find(|r| r.url != endpoint).map(|r| {
        let (line, url) = (r.line, &r.url);
        let message = format!(
            "The URL of line {line} ({url}) does not match the batch's endpoint {endpoint}."
        );
        let error =
            json!({"code": "invalid_url", "message": message, "param": "url", "line": line});
        json!({"object": "list", "data": [error]})
    });
    let id = {
        let mut state = shared.lock();
        let store = &mut state.batches;
        let ordinal = store.next_batch();
        let id = format!("batch_sim{ordinal:016}");
        let batch = Batch {
            id: id.clone(),
            ordinal,
            timeline: Timeline::new(shared, now),
            endpoint,
            input_file_id,
            input,
            metadata,
            errors,
            outcome: None,
        };
        store.batches.insert(id.clone(), batch);
        id
    };
    retrieve(shared, &id, entry, now)
}

/// The input file, endpoint and metadata of a create request.
fn parameters(json: &Value) -> Result<(String, String, Value), String> {
    let text = |field: &str| match json.get(field) {
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(format!("Invalid type for '{field}': expected a string.")),
        None => Err(format!("Missing required parameter: '{field}'.")),
    };
    let input_file_id = text("input_file_id")?;
    let endpoint = text("endpoint")?;
    if !ENDPOINTS.contains(&endpoint.as_str()) {
        return Err(format!(
            "Invalid value for 'endpoint': '{endpoint}'. Supported values are: {}.",
            ENDPOINTS.join(", ")
        ));
    }
    let window = text("completion_window")?;
    if window != "24h" {
        return Err(format!(
            "Invalid value for 'completion_window': '{window}'. Supported values are: '24h'."
        ));
    }
    let metadata = match json.get("metadata") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Object(map)) if map.len() <= 16 && map.values().all(Value::is_string) => {
            Value::Object(map.clone())
        }
        Some(_) => return Err("Invalid 'metadata': expected at most 16 string values.".into()),
    };
    Ok((input_file_id, endpoint, metadata))
}

/// `GET /v1/batches/{id}`: settles a batch that is due, then shows it.
pub(super) fn retrieve(
    shared: &Shared,
    id: &str,
    entry: &mut LogEntry,
    now: Instant,
) -> Response<SimBody> {
    settle(shared, id, now);
    let object = shared.lock().batches.batches.get(id).map(|b| b.object(now));
    match object {
        Some(object) => json_ok(shared, Dialect::OpenAi, entry.seq, &object),
        None => not_found(shared, id, entry),
    }
}

/// `POST /v1/batches/{id}/cancel`: `cancelling`, then `cancelled` without results.
pub(super) fn cancel(
    shared: &Shared,
    id: &str,
    entry: &mut LogEntry,
    now: Instant,
) -> Response<SimBody> {
    let canceled = shared.lock().batches.batches.get_mut(id).map(|batch| {
        let status = batch.status(now);
        let running = matches!(status, "validating" | "in_progress");
        if status == "cancelling" || (running && batch.timeline.cancel(now)) {
            Ok(batch.object(now))
        } else {
            Err(status)
        }
    });
    match canceled {
        None => not_found(shared, id, entry),
        Some(Ok(object)) => json_ok(shared, Dialect::OpenAi, entry.seq, &object),
        Some(Err(status)) => {
            let message = format!("Cannot cancel a batch with status '{status}'.");
            bad_request(shared, Dialect::OpenAi, entry, message)
        }
    }
}

fn not_found(shared: &Shared, id: &str, entry: &mut LogEntry) -> Response<SimBody> {
    missing(
        shared,
        Dialect::OpenAi,
        entry,
        &format!("No batch found with id '{id}'."),
    )
}

/// Computes the results of a batch that has just completed or expired, outside the lock; the
/// first to store them wins (any other computed the same bytes).
pub(super) fn settle(shared: &Shared, id: &str, now: Instant) {
    let job = {
        let state = shared.lock();
        state.batches.batches.get(id).and_then(|batch| {
            let due = batch.outcome.is_none() && batch.errors.is_none();
            let t = &batch.timeline;
            let ended = t.completed_at(now).or_else(|| t.expired_at(now));
            let ended = ended.filter(|_| due)?;
            Some((
                batch.ordinal,
                batch.endpoint.clone(),
                batch.input.clone(),
                unix(ended),
                t.processed(batch.input.requests.len()),
            ))
        })
    };
    let Some((ordinal, endpoint, input, created, processed)) = job else {
        return;
    };
    let (tally, output, errors) = run::openai_batch(
        shared,
        ordinal,
        &endpoint,
        &input.requests,
        created,
        processed,
    );
    let mut outcome = Outcome {
        tally,
        output_file_id: None,
        error_file_id: None,
    };
    let mut files = Vec::new();
    let kinds = [
        (output, "out", "output", &mut outcome.output_file_id),
        (errors, "err", "error", &mut outcome.error_file_id),
    ];
    for (lines, kind, name, slot) in kinds {
        if lines.is_empty() {
            continue;
        }
        let file_id = format!("file-sim{kind}{ordinal:013}");
        *slot = Some(file_id.clone());
        files.push(StoredFile {
            id: file_id,
            filename: format!("batch_sim{ordinal:016}_{name}.jsonl"),
            purpose: "batch_output",
            created_at: created,
            content: Bytes::from(lines),
            input: None,
        });
    }
    let mut state = shared.lock();
    let store = &mut state.batches;
    if let Some(batch) = store.batches.get_mut(id)
        && batch.outcome.is_none()
    {
        batch.outcome = Some(outcome);
        for file in files {
            store.files.insert(file.id.clone(), file);
        }
    }
}
