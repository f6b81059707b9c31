//! OpenAI's Files API, as far as batches need it: upload a JSONL input (`purpose=batch`),
//! read a file's object and its content (inputs, outputs and error files alike). A malformed
//! upload is a 400; a well-formed one fails with a 500, storing nothing, at
//! [`BatchConfig::upload_error_rate`](crate::config::BatchConfig::upload_error_rate).

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode, header};
use http_body::Body;
use rand::RngExt as _;
use tokio::time::Instant;
use tollgate_core::BoxError;

use super::jsonl::{self, MAX_FILE_BYTES};
use super::store::StoredFile;
use super::{bad_request, json_ok, missing, read_body, respond, unix};
use crate::body::SimBody;
use crate::dialect::{Dialect, Refuse};
use crate::respond::refuse;
use crate::state::Shared;
use crate::stats::LogEntry;

/// Room for the multipart framing around a file of the largest size.
const FORM_OVERHEAD: usize = 1024 * 1024;

/// `POST /v1/files`: stores a batch input file once every line checks out (unless the upload
/// draws a server error).
pub(super) async fn upload<B>(
    shared: &Arc<Shared>,
    parts: &Parts,
    body: B,
    entry: &mut LogEntry,
) -> Response<SimBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let dialect = Dialect::OpenAi;
    let bytes = match read_body(body, MAX_FILE_BYTES + FORM_OVERHEAD).await {
        Ok(bytes) => bytes,
        Err(Refuse::BodyTooLarge(_)) => {
            return bad_request(shared, dialect, entry, jsonl::too_large());
        }
        Err(refusal) => return refuse(shared, dialect, refusal, entry, HeaderMap::new()),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let form = match jsonl::read_form(content_type, bytes).await {
        Ok(form) => form,
        Err(message) => return bad_request(shared, dialect, entry, message),
    };
    match form.purpose.as_deref() {
        Some("batch") => {}
        Some(other) => {
            let message = format!(
                "Invalid value for 'purpose': '{other}'. The simulator accepts only 'batch'."
            );
            return bad_request(shared, dialect, entry, message);
        }
        None => {
            return bad_request(
                shared,
                dialect,
                entry,
                "Missing required parameter: 'purpose'.",
            );
        }
    }
    let Some(content) = form.file else {
        return bad_request(
            shared,
            dialect,
            entry,
            "Missing required parameter: 'file'.",
        );
    };
    let input = match jsonl::parse(&content) {
        Ok(input) => input,
        Err(message) => return bad_request(shared, dialect, entry, message),
    };
    entry.model.clone_from(&input.model);
    // Drawn from the request's own number, as the synchronous endpoints draw their faults.
    let rate = shared.config.batch.upload_error_rate;
    if rate > 0.0 && shared.rng(entry.seq).random_bool(rate) {
        return refuse(
            shared,
            dialect,
            Refuse::ServerError,
            entry,
            HeaderMap::new(),
        );
    }
    let now = Instant::now();
    let object = {
        let mut state = shared.lock();
        let store = &mut state.batches;
        let id = format!("file-sim{:016}", store.next_upload());
        let file = StoredFile {
            id: id.clone(),
            filename: form.filename.unwrap_or_else(|| "batch_input.jsonl".into()),
            purpose: "batch",
            created_at: unix(shared.wall(now)),
            content,
            input: Some(Arc::new(input)),
        };
        let object = file.object();
        store.files.insert(id, file);
        object
    };
    json_ok(shared, dialect, entry.seq, &object)
}

/// `GET /v1/files/{id}`.
pub(super) fn retrieve(shared: &Shared, id: &str, entry: &mut LogEntry) -> Response<SimBody> {
    let object = shared.lock().batches.files.get(id).map(StoredFile::object);
    match object {
        Some(object) => json_ok(shared, Dialect::OpenAi, entry.seq, &object),
        None => not_found(shared, id, entry),
    }
}

/// `GET /v1/files/{id}/content`: the bytes as uploaded, or the JSONL a batch wrote.
pub(super) fn content(shared: &Shared, id: &str, entry: &mut LogEntry) -> Response<SimBody> {
    let content = shared
        .lock()
        .batches
        .files
        .get(id)
        .map(|file| file.content.clone());
    match content {
        Some(bytes) => respond(
            shared,
            Dialect::OpenAi,
            entry.seq,
            StatusCode::OK,
            "application/octet-stream",
            bytes,
        ),
        None => not_found(shared, id, entry),
    }
}

/// The 404 of an unknown file.
pub(super) fn not_found(shared: &Shared, id: &str, entry: &mut LogEntry) -> Response<SimBody> {
    missing(
        shared,
        Dialect::OpenAi,
        entry,
        &format!("No such File object: {id}"),
    )
}
