//! The Batch APIs: OpenAI's files and batches, Anthropic's message batches.
//!
//! Why simulate them? Batches are how a client moves work off the per-minute limits (the
//! providers queue them apart, at half price), so a client that falls back to batches under
//! pressure must be testable against the same simulator that pushes it there. The simulator
//! keeps them simple and exact:
//!
//! - a batch's status is a function of `tokio::time` since its creation (validating for a tenth
//!   of [`BatchConfig::completion_delay`](crate::config::BatchConfig), then in progress, then
//!   done once the delay has passed), so paused-time tests step through it with `advance`;
//! - a batch that would take longer than
//!   [`BatchConfig::expire_after`](crate::config::BatchConfig::expire_after) ends `expired` at
//!   that age instead (Anthropic: `ended`), with partial results as the providers give them:
//!   the first ⌊requests × `expire_after` / `completion_delay`⌋ requests ran, every later one is
//!   expired (OpenAI: a `batch_expired` line in the error file; Anthropic: an `expired`
//!   result) — the case a durable client must resubmit from;
//! - the results are computed once, when first looked at after the batch ended, from the seed,
//!   the batch's number and each request's line — never from the live request counter — so the
//!   same seed and the same sequence of batches give the same answers whatever else the
//!   simulator served in between;
//! - both APIs list their batches newest first, a page at a time (OpenAI: `limit` up to 100
//!   and an `after` cursor; Anthropic: `limit` up to 1000 and `after_id` or `before_id`), so a
//!   client that lost its state can find its batches again (OpenAI's carry the `metadata` they
//!   were created with; Anthropic's carry none, so a client matches on the ids it stored);
//! - a share of file uploads
//!   ([`BatchConfig::upload_error_rate`](crate::config::BatchConfig::upload_error_rate)) fail
//!   with a 500 and store nothing, drawn from the seed like the other faults;
//! - batch calls are authenticated like every other call, but consume no per-minute limit;
//! - [`SimService::batches`](crate::SimService::batches) shows a test every batch and the
//!   `custom_id`s it holds, without going through the API.

mod anthropic;
mod files;
mod jsonl;
mod list;
mod openai;
mod run;
mod store;
mod summary;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use tollgate_core::BoxError;

use crate::body::SimBody;
use crate::dialect::{Dialect, Refuse};
use crate::respond::refuse;
use crate::state::{KeyRefusal, Shared};
use crate::stats::{LogEntry, Rejection};

pub(crate) use self::list::Query;
pub(crate) use self::store::Store;
pub(crate) use self::summary::summaries;
pub use self::summary::{BatchApi, BatchSummary};

/// A batch endpoint, with the id it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /v1/files`
    UploadFile,
    /// `GET /v1/files/{id}`
    File(String),
    /// `GET /v1/files/{id}/content`
    FileContent(String),
    /// `POST /v1/batches`
    CreateBatch,
    /// `GET /v1/batches`
    ListBatches,
    /// `GET /v1/batches/{id}`
    Batch(String),
    /// `POST /v1/batches/{id}/cancel`
    CancelBatch(String),
    /// `POST /v1/messages/batches`
    CreateMessageBatch,
    /// `GET /v1/messages/batches`
    ListMessageBatches,
    /// `GET /v1/messages/batches/{id}`
    MessageBatch(String),
    /// `GET /v1/messages/batches/{id}/results`
    MessageBatchResults(String),
    /// `POST /v1/messages/batches/{id}/cancel`
    CancelMessageBatch(String),
}

impl Route {
    fn dialect(&self) -> Dialect {
        match self {
            Self::CreateMessageBatch
            | Self::ListMessageBatches
            | Self::MessageBatch(_)
            | Self::MessageBatchResults(_)
            | Self::CancelMessageBatch(_) => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }
}

/// The batch endpoint `method` and `path` name, if any.
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let id = |s: &str| s.to_owned();
    let route = match (method, segments.as_slice()) {
        (&Method::POST, ["files"]) => Route::UploadFile,
        (&Method::GET, ["files", file]) => Route::File(id(file)),
        (&Method::GET, ["files", file, "content"]) => Route::FileContent(id(file)),
        (&Method::POST, ["batches"]) => Route::CreateBatch,
        (&Method::GET, ["batches"]) => Route::ListBatches,
        (&Method::GET, ["batches", batch]) => Route::Batch(id(batch)),
        (&Method::POST, ["batches", batch, "cancel"]) => Route::CancelBatch(id(batch)),
        (&Method::POST, ["messages", "batches"]) => Route::CreateMessageBatch,
        (&Method::GET, ["messages", "batches"]) => Route::ListMessageBatches,
        (&Method::GET, ["messages", "batches", batch]) => Route::MessageBatch(id(batch)),
        (&Method::GET, ["messages", "batches", batch, "results"]) => {
            Route::MessageBatchResults(id(batch))
        }
        (&Method::POST, ["messages", "batches", batch, "cancel"]) => {
            Route::CancelMessageBatch(id(batch))
        }
        _ => return None,
    };
    Some(route)
}

/// Serves one batch call: authenticates it (no rate limit is charged), then runs the route.
pub(crate) async fn handle<B>(
    shared: &Arc<Shared>,
    route: Route,
    parts: &Parts,
    body: B,
    entry: &mut LogEntry,
) -> Response<SimBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let dialect = route.dialect();
    let quota_exhausted = match shared.authenticate(parts, entry) {
        Ok(quota_exhausted) => quota_exhausted,
        Err(refusal) => {
            let missing = refusal == KeyRefusal::Missing;
            let refusal = Refuse::Unauthorized { missing };
            return refuse(shared, dialect, refusal, entry, HeaderMap::new());
        }
    };
    let now = Instant::now();
    match route {
        Route::UploadFile => files::upload(shared, parts, body, entry).await,
        Route::File(id) => files::retrieve(shared, &id, entry),
        Route::FileContent(id) => files::content(shared, &id, entry),
        Route::CreateBatch => openai::create(shared, quota_exhausted, body, entry).await,
        Route::ListBatches => list::batches(shared, &parts.uri, entry, now),
        Route::Batch(id) => openai::retrieve(shared, &id, entry, now),
        Route::CancelBatch(id) => openai::cancel(shared, &id, entry, now),
        Route::CreateMessageBatch => anthropic::create(shared, quota_exhausted, body, entry).await,
        Route::ListMessageBatches => list::message_batches(shared, &parts.uri, entry, now),
        Route::MessageBatch(id) => anthropic::retrieve(shared, &id, entry, now),
        Route::MessageBatchResults(id) => anthropic::results(shared, &id, entry, now),
        Route::CancelMessageBatch(id) => anthropic::cancel(shared, &id, entry, now),
    }
}

/// The whole body, at most `limit` bytes.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Refuse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Refuse::BodyTooLarge(limit)),
        Err(error) => Err(Refuse::BadRequest(format!(
            "could not read the request body: {error}"
        ))),
    }
}

/// The whole body as JSON, at most `limit` bytes.
async fn read_json<B>(body: B, limit: usize) -> Result<Value, Refuse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let bytes = read_body(body, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Refuse::BadRequest(format!("The request body is not valid JSON ({e}).")))
}

/// A 400 in `dialect`, counted as a bad request.
fn bad_request(
    shared: &Shared,
    dialect: Dialect,
    entry: &mut LogEntry,
    message: impl Into<String>,
) -> Response<SimBody> {
    let refusal = Refuse::BadRequest(message.into());
    refuse(shared, dialect, refusal, entry, HeaderMap::new())
}

/// A 404 for an object that does not exist (not an unknown URL), in `dialect`.
fn missing(
    shared: &Shared,
    dialect: Dialect,
    entry: &mut LogEntry,
    message: &str,
) -> Response<SimBody> {
    entry.rejection = Some(Rejection::NotFound);
    let body = match dialect {
        // Batches are served in OpenAI's and Anthropic's dialects only.
        Dialect::OpenAi | Dialect::Azure | Dialect::Mistral | Dialect::Gemini => {
            json!({"error": {"message": message,
            "type": "invalid_request_error", "param": null, "code": null}})
        }
        Dialect::Anthropic => json!({"type": "error",
            "error": {"type": "not_found_error", "message": message},
            "request_id": crate::anthropic::request_id(entry.seq)}),
    };
    let bytes = Bytes::from(body.to_string());
    respond(
        shared,
        dialect,
        entry.seq,
        StatusCode::NOT_FOUND,
        "application/json",
        bytes,
    )
}

/// A 200 with a JSON object.
fn json_ok(shared: &Shared, dialect: Dialect, seq: u64, value: &Value) -> Response<SimBody> {
    let bytes = Bytes::from(value.to_string());
    respond(
        shared,
        dialect,
        seq,
        StatusCode::OK,
        "application/json",
        bytes,
    )
}

/// A response with the `date` and request-id headers every response of `dialect` carries.
fn respond(
    shared: &Shared,
    dialect: Dialect,
    seq: u64,
    status: StatusCode,
    content_type: &'static str,
    bytes: Bytes,
) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let date = httpdate::fmt_http_date(shared.wall(Instant::now()));
    if let Ok(date) = HeaderValue::from_str(&date) {
        headers.insert(header::DATE, date);
    }
    dialect.request_id(headers, seq);
    response
}

/// Unix seconds, as OpenAI's `*_at` fields carry them.
fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 with microseconds, as Anthropic's `*_at` fields carry them.
fn rfc3339(at: SystemTime) -> String {
    let micros = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    i128::try_from(micros)
        .ok()
        .and_then(|m| OffsetDateTime::from_unix_timestamp_nanos(m * 1_000).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn routes_name_their_ids_and_nothing_else() {
        assert_eq!(
            route(&Method::GET, "/v1/files/file-1/content"),
            Some(Route::FileContent("file-1".into()))
        );
        assert_eq!(
            route(&Method::POST, "/v1/messages/batches/msgbatch_1/cancel"),
            Some(Route::CancelMessageBatch("msgbatch_1".into()))
        );
        assert_eq!(route(&Method::GET, "/v1/batches"), Some(Route::ListBatches));
        assert_eq!(
            route(&Method::GET, "/v1/messages/batches"),
            Some(Route::ListMessageBatches)
        );
        assert_eq!(Route::ListMessageBatches.dialect(), Dialect::Anthropic);
        assert_eq!(Route::ListBatches.dialect(), Dialect::OpenAi);
        assert_eq!(route(&Method::GET, "/v1/batches/"), None);
        assert_eq!(route(&Method::DELETE, "/v1/batches/batch_1"), None);
        assert_eq!(route(&Method::POST, "/v1/messages"), None);
        assert_eq!(route(&Method::GET, "/v2/batches/b"), None);
    }

    #[test]
    fn timestamps_in_both_formats() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_724_179_044_100_435);
        assert_eq!(unix(at), 1_724_179_044);
        assert_eq!(rfc3339(at), "2024-08-20T18:37:24.100435Z");
    }
}
