//! [`NoMemberAvailable`]: no member of the pool may serve a request, for now.

use std::fmt;
use std::time::Duration;

use tollgate_core::RateLimitDimension;
use tollgate_core::error::RateLimited;

/// Every member of the pool is out of rotation (cooling down or parked), and the earliest is
/// not back before the request's deadline (or the pool fails at once:
/// [`WhenExhausted::Fail`](crate::WhenExhausted::Fail)).
///
/// Its [`source`](std::error::Error::source) is a [`RateLimited`] with the same wait, so the
/// layers above treat it as a local refusal that may be retried after `retry_after`; a
/// gateway may tell its client the whole pool is out (a 503) rather than one limit (a 429).
#[derive(Debug)]
pub struct NoMemberAvailable {
    /// When the earliest member is back; `None` when every member is parked until reset.
    pub retry_after: Option<Duration>,
    limited: RateLimited,
}

impl NoMemberAvailable {
    pub(crate) fn new(retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            limited: RateLimited {
                dimension: RateLimitDimension::Requests,
                retry_after,
            },
        }
    }
}

impl fmt::Display for NoMemberAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(wait) => write!(
                f,
                "no member of the pool may serve: every one is cooling down or parked, the \
                 earliest back in {:.1}s",
                wait.as_secs_f64()
            ),
            None => f.write_str(
                "no member of the pool may serve: every one is parked until reset (an \
                 exhausted quota or a refused key)",
            ),
        }
    }
}

impl std::error::Error for NoMemberAvailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.limited)
    }
}
