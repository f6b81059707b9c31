use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::Layer;

use crate::metrics::QueueMetrics;
use crate::service::ConcurrencyLimit;

/// Which share of the limit a request draws on, as a request extension (interactive when
/// absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// A user is waiting.
    #[default]
    Interactive,
    /// Background work: batch jobs, backfills.
    Batch,
}

/// Limits the calls in flight; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share the permits: one limit for every clone.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    pub(crate) limits: Arc<Limits>,
}

#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) interactive: Arc<Semaphore>,
    pub(crate) batch: Option<Arc<Semaphore>>,
    pub(crate) queue_timeout: Option<Duration>,
    pub(crate) sizes: (usize, usize),
    /// The interactive and the batch partition's metrics handles.
    pub(crate) metrics: [QueueMetrics; 2],
}

impl ConcurrencyLimitLayer {
    /// At most `limit` calls in flight.
    ///
    /// # Panics
    ///
    /// When `limit` is 0.
    pub fn new(limit: usize) -> Self {
        assert!(
            limit > 0,
            "a concurrency limit must allow at least one call"
        );
        Self::build(limit, 0, None)
    }

    fn build(interactive: usize, batch: usize, queue_timeout: Option<Duration>) -> Self {
        Self {
            limits: Arc::new(Limits {
                interactive: Arc::new(Semaphore::new(interactive)),
                batch: (batch > 0).then(|| Arc::new(Semaphore::new(batch))),
                queue_timeout,
                sizes: (interactive, batch),
                metrics: [QueueMetrics::new("interactive"), QueueMetrics::new("batch")],
            }),
        }
    }

    /// Splits the limit: `interactive_share` of it (rounded, at least one call each) for
    /// interactive requests, the rest for [`Priority::Batch`] ones. Neither borrows the other's.
    ///
    /// # Panics
    ///
    /// When the share is not in (0, 1), or the limit is too small to split.
    pub fn with_partitions(self, interactive_share: f64) -> Self {
        assert!(
            interactive_share > 0.0 && interactive_share < 1.0,
            "the interactive share must be between 0 and 1"
        );
        let total = self.limits.sizes.0 + self.limits.sizes.1;
        assert!(total >= 2, "a limit of 1 cannot be split");
        let interactive = ((total as f64 * interactive_share).round() as usize).clamp(1, total - 1);
        Self::build(interactive, total - interactive, self.limits.queue_timeout)
    }

    /// Gives up on a request that waited `timeout` for a permit, with
    /// [`QueueTimeout`](tollgate_core::error::QueueTimeout).
    pub fn with_queue_timeout(self, timeout: Duration) -> Self {
        let (interactive, batch) = self.limits.sizes;
        Self::build(interactive, batch, Some(timeout))
    }

    /// The slots of each partition: (interactive, batch).
    pub fn sizes(&self) -> (usize, usize) {
        self.limits.sizes
    }

    /// Slots free now in `priority`'s partition.
    pub fn available(&self, priority: Priority) -> usize {
        self.limits.semaphore(priority).available_permits()
    }
}

impl Limits {
    pub(crate) fn semaphore(&self, priority: Priority) -> &Arc<Semaphore> {
        match (priority, &self.batch) {
            (Priority::Batch, Some(batch)) => batch,
            _ => &self.interactive,
        }
    }

    /// The metrics handles of the partition `priority` is served by.
    pub(crate) fn metrics(&self, priority: Priority) -> &QueueMetrics {
        match (priority, &self.batch) {
            (Priority::Batch, Some(_)) => &self.metrics[1],
            _ => &self.metrics[0],
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::new(inner, self.limits.clone())
    }
}
