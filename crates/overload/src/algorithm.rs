//! Limit algorithms: how the number of calls allowed in flight follows what the upstream says.
//!
//! - [`Aimd`] (the default): additive increase while calls succeed, multiplicative decrease
//!   when the upstream sheds one (529 "Overloaded", 503) or a call times out. Providers shed
//!   rather than queue, so a shed call is the clearest signal there is.
//! - [`Gradient`]: Envoy's gradient controller, for upstreams that queue: the limit follows the
//!   ratio of the ideal latency to the latency seen now.
//!
//! Both avoid the known failure modes of adaptive limits: a timeout counts as a drop (the
//! limit never climbs under steady timeouts), a dropped call reports no latency (a 529 that
//! comes back in 2 ms is not a fast call), a drop of a call sent before the last decrease is
//! not counted again (one decrease per round trip, not one per call of the burst that
//! overshot), and the limit only grows when it is being used.

mod aimd;
mod gradient;

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

pub use self::aimd::Aimd;
pub use self::gradient::Gradient;

/// What one finished call says about the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the call was sent (after it had its permit).
    pub started: Instant,
    /// Its latency, normalised (see [`LatencyMeasure`](crate::LatencyMeasure)); not meaningful
    /// for a drop.
    pub latency: Duration,
    /// Calls in flight when it was sent, itself included.
    pub in_flight: usize,
    /// The upstream shed it (overloaded) or it timed out.
    pub dropped: bool,
}

/// An algorithm that sets the concurrency limit from samples.
///
/// One instance per scope (the layer clones a prototype), updated under a lock: no need to be
/// thread-safe beyond being `Send + Sync` plain data.
pub trait LimitAlgorithm: fmt::Debug + Send + Sync + 'static {
    /// The limit now.
    fn limit(&self) -> usize;

    /// Takes one sample in, at `now`, and returns the new limit.
    fn update(&mut self, sample: &Sample, now: Instant) -> usize;

    /// A fresh instance with the same settings, for a new scope.
    fn boxed_clone(&self) -> Box<dyn LimitAlgorithm>;
}
