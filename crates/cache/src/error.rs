//! The cache's errors: a shared call that failed, and a stale lookup with nothing to serve.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use tollgate_core::BoxError;

/// The upstream call that identical requests shared failed; every request that waited on it
/// gets this, with the call's error as its source (so
/// [`classify_error`](tollgate_core::classify::classify_error) and callers that walk the
/// sources see the original). A request that nobody joined gets its error as it is.
#[derive(Clone, Debug)]
pub struct SharedCallFailed {
    source: Arc<BoxError>,
}

impl SharedCallFailed {
    pub(crate) fn new(source: Arc<BoxError>) -> Self {
        Self { source }
    }
}

impl fmt::Display for SharedCallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the shared upstream call failed: {}", self.source)
    }
}

impl Error for SharedCallFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref().as_ref())
    }
}

/// The task making a shared upstream call stopped without an answer: the inner service
/// panicked, or the runtime is shutting down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLost;

impl fmt::Display for CallLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the upstream call stopped without an answer")
    }
}

impl Error for CallLost {}

/// A [stale lookup](crate::CacheHandle::stale_lookup) has nothing to serve: no entry under the
/// request's key, one past the most staleness allowed, or a request that rules the cache out
/// (`cache-control: no-store`). Under a fallback layer, the caller then gets the upstream's
/// own failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotCached;

impl fmt::Display for NotCached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no cached answer to serve in place of the upstream's")
    }
}

impl Error for NotCached {}
