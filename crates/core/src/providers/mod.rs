//! Provider header and error-body parsing.
use std::time::SystemTime;
use http::HeaderMap;
use crate::{Provider, RateLimitSnapshot};
pub(crate) fn snapshot_from_headers(_headers: &HeaderMap, _provider: Option<Provider>, _now: SystemTime) -> RateLimitSnapshot {
    RateLimitSnapshot::default()
}
