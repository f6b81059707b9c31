//! What the concurrency limit records through the `metrics` facade (feature `metrics`; every
//! name is in `docs/metrics.md`). Without the feature [`QueueMetrics`] is empty and its methods
//! do nothing, so call sites need no `cfg`.
//!
//! The handles of each partition are registered when the layer is built; a call costs one
//! histogram record.

use std::time::Duration;

#[cfg(feature = "metrics")]
use metrics::{Counter, Histogram};

/// One partition's handles: `priority` is `interactive` or `batch`.
#[derive(Clone, Debug)]
pub(crate) struct QueueMetrics {
    #[cfg(feature = "metrics")]
    wait: Histogram,
    #[cfg(feature = "metrics")]
    timeouts: Counter,
}

impl QueueMetrics {
    pub(crate) fn new(priority: &'static str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = priority;
        Self {
            #[cfg(feature = "metrics")]
            wait: metrics::histogram!("tollgate_concurrency_queue_wait_seconds", "priority" => priority),
            #[cfg(feature = "metrics")]
            timeouts: metrics::counter!("tollgate_concurrency_queue_timeouts_total", "priority" => priority),
        }
    }

    /// A call got its permit after waiting `waited` (zero: at once).
    #[inline]
    pub(crate) fn admitted(&self, waited: Duration) {
        #[cfg(feature = "metrics")]
        self.wait.record(waited.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = waited;
    }

    /// A call waited past the queue timeout.
    #[inline]
    pub(crate) fn timed_out(&self) {
        #[cfg(feature = "metrics")]
        self.timeouts.increment(1);
    }
}
