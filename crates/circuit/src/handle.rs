//! [`CircuitHandle`]: watching and steering the circuits by hand.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tollgate_core::Scope;

use crate::config::Mode;
use crate::layer::Breakers;
use crate::state::{CircuitEvent, CircuitMetrics, CircuitState};

/// Reads and controls the circuits of a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// With a shared circuit, every method acts on it whatever the scope given. With circuits
/// shared by a fleet through Redis ([`with_redis`](crate::CircuitBreakerLayer::with_redis)),
/// [`force_open`](Self::force_open), [`reset`](Self::reset), [`disable`](Self::disable) and
/// [`metrics_only`](Self::metrics_only) act on every process's circuit, within a sync interval.
///
/// # Clone
///
/// Clones act on the same circuits.
#[derive(Clone, Debug)]
pub struct CircuitHandle {
    pub(crate) breakers: Arc<Breakers>,
}

impl CircuitHandle {
    /// The state of `scope`'s circuit (closed if it has none yet).
    pub fn state(&self, scope: &Scope) -> CircuitState {
        self.breakers
            .find(scope)
            .map_or(CircuitState::Closed, |b| b.state())
    }

    /// The counters of `scope`'s circuit, if it has one.
    pub fn metrics(&self, scope: &Scope) -> Option<CircuitMetrics> {
        self.breakers.find(scope).map(|b| b.metrics(Instant::now()))
    }

    /// The counters of every circuit, for a health report (a shared circuit is reported under
    /// [`SHARED_SCOPE`](tollgate_core::SHARED_SCOPE)).
    pub fn snapshot(&self) -> Vec<(Scope, CircuitMetrics)> {
        let now = Instant::now();
        self.breakers
            .all()
            .into_iter()
            .map(|(scope, breaker)| (scope, breaker.metrics(now)))
            .collect()
    }

    /// Refuses every call to `scope` until [`reset`](Self::reset).
    pub fn force_open(&self, scope: &Scope) {
        self.steer(scope, Mode::ForcedOpen);
    }

    /// Closes `scope`'s circuit and returns it to normal operation, forgetting its counts.
    pub fn reset(&self, scope: &Scope) {
        self.steer(scope, Mode::Normal);
    }

    /// Lets every call to `scope` through, counting nothing.
    pub fn disable(&self, scope: &Scope) {
        self.steer(scope, Mode::Disabled);
    }

    /// Counts and reports for `scope` but never refuses.
    pub fn metrics_only(&self, scope: &Scope) {
        self.steer(scope, Mode::MetricsOnly);
    }

    /// Sets `scope`'s mode here and, with a circuit shared through Redis, in every process.
    fn steer(&self, scope: &Scope, mode: Mode) {
        let breaker = self.breakers.get(scope);
        breaker.set_mode(mode);
        #[cfg(feature = "redis")]
        if let Some(fleet) = breaker.fleet() {
            fleet.steered(mode);
        }
    }

    /// A stream of every state change from now on (a slow reader that falls more than 256
    /// events behind gets a `Lagged` error and continues from the newest).
    pub fn subscribe(&self) -> broadcast::Receiver<CircuitEvent> {
        self.breakers.subscribe()
    }
}
