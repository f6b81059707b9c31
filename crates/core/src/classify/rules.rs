use std::time::SystemTime;
use http::{HeaderMap, StatusCode};
use crate::{Outcome, OutcomeKind};
/// Classifies a response.
pub fn classify_response(_status: StatusCode, _headers: &HeaderMap, _body: &[u8], _now: SystemTime) -> Outcome { Outcome::success() }
/// Classifies an error.
pub fn classify_error(_error: &(dyn std::error::Error + 'static)) -> Outcome { Outcome::new(OutcomeKind::ConnectError) }
/// Classifies a stream error.
pub fn classify_stream_error(_data: &[u8]) -> Outcome { Outcome::new(OutcomeKind::ServerError) }
