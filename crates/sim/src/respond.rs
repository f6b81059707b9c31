//! What every response of the generation pipeline carries: the `content-type`, `date` and
//! request-id headers, and refusals rendered in the caller's dialect and counted in the stats.

use http::{HeaderMap, HeaderValue, Response, header};
use tokio::time::Instant;

use crate::body::SimBody;
use crate::dialect::{Context, Dialect, Refuse};
use crate::state::Shared;
use crate::stats::{LogEntry, Rejection};

/// Sets `headers` (plus `content-type`, `date` and the dialect's request id) on `response`.
pub(crate) fn finish_headers(
    shared: &Shared,
    dialect: Dialect,
    seq: u64,
    mut headers: HeaderMap,
    content_type: &'static str,
    response: &mut Response<SimBody>,
) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let date = httpdate::fmt_http_date(shared.wall(Instant::now()));
    if let Ok(date) = HeaderValue::from_str(&date) {
        headers.insert(header::DATE, date);
    }
    dialect.request_id(&mut headers, seq);
    *response.headers_mut() = headers;
}

/// A refusal as a response, counted in the stats.
pub(crate) fn refuse(
    shared: &Shared,
    dialect: Dialect,
    refusal: Refuse,
    entry: &mut LogEntry,
    headers: HeaderMap,
) -> Response<SimBody> {
    let context = Context {
        seq: entry.seq,
        ..Context::default()
    };
    refuse_with(shared, dialect, context, refusal, entry, headers)
}

/// [`refuse`], with what the body may name about the call.
pub(crate) fn refuse_with(
    shared: &Shared,
    dialect: Dialect,
    context: Context<'_>,
    refusal: Refuse,
    entry: &mut LogEntry,
    headers: HeaderMap,
) -> Response<SimBody> {
    let (status, bytes) = dialect.render(&refusal, context);
    entry.rejection = Some(match refusal {
        Refuse::BadRequest(_) => Rejection::BadRequest,
        Refuse::Unauthorized { .. } => Rejection::Unauthorized,
        Refuse::NotFound(_) | Refuse::ModelNotFound(_) => Rejection::NotFound,
        Refuse::BodyTooLarge(_) | Refuse::TooLarge { .. } => Rejection::TooLarge,
        Refuse::QuotaExhausted => Rejection::QuotaExhausted,
        Refuse::RateLimited { .. } => Rejection::RateLimited,
        Refuse::ServerError => Rejection::ServerError,
        Refuse::Overloaded(_) => Rejection::Overloaded,
    });
    let mut response = Response::new(SimBody::full(bytes));
    *response.status_mut() = status;
    let content_type = dialect.json_content_type();
    finish_headers(
        shared,
        dialect,
        entry.seq,
        headers,
        content_type,
        &mut response,
    );
    response
}
