//! The batcher's errors.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use tollgate_core::BoxError;

/// The batcher's queue was full and the layer is set to fail rather than wait
/// ([`WhenFull::Fail`](crate::WhenFull::Fail)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull {
    /// The queue's capacity, in requests.
    pub capacity: usize,
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch queue full ({} requests waiting)", self.capacity)
    }
}

impl Error for QueueFull {}

/// The merged call failed; every member gets this, with the failure as its source (so
/// [`classify_error`](tollgate_core::classify::classify_error) and retries see the original).
#[derive(Clone, Debug)]
pub struct BatchFailed {
    source: Arc<BoxError>,
}

impl BatchFailed {
    pub(crate) fn new(source: BoxError) -> Self {
        Self {
            source: Arc::new(source),
        }
    }
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the merged batch call failed: {}", self.source)
    }
}

impl Error for BatchFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref().as_ref())
    }
}

/// The batcher's worker is gone (its runtime shut down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherClosed;

impl fmt::Display for BatcherClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the batcher has stopped")
    }
}

impl Error for BatcherClosed {}
