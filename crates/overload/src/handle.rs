//! [`OverloadHandle`]: reading the state of every scope, and the batch-size signal.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tollgate_core::Scope;

use crate::controller::OverloadEvent;
use crate::detector::OverloadState;
use crate::layer::Shared;

/// Reads the state of an [`OverloadLayer`](crate::OverloadLayer)'s scopes.
///
/// # Clone
///
/// Clones read the same state.
#[derive(Clone, Debug)]
pub struct OverloadHandle {
    pub(crate) shared: Arc<Shared>,
}

/// One scope at a glance.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OverloadSnapshot {
    /// The scope.
    pub scope: Scope,
    /// Its overload state.
    pub state: OverloadState,
    /// Its concurrency limit now.
    pub limit: usize,
    /// Its calls in flight.
    pub in_flight: usize,
    /// The share of shed and timed-out calls in the detector's window.
    pub bad_share: f64,
    /// The probability an interactive request is shed here now.
    pub rejection_probability: f64,
}

impl OverloadHandle {
    /// A scope's state (Normal for a scope never seen).
    pub fn state(&self, scope: &Scope) -> OverloadState {
        self.shared
            .controllers
            .find(scope)
            .map_or(OverloadState::Normal, |c| c.state_at(Instant::now()))
    }

    /// A scope's concurrency limit (`None` for a scope never seen).
    pub fn limit(&self, scope: &Scope) -> Option<usize> {
        self.shared
            .controllers
            .find(scope)
            .map(|c| c.limiter.limit())
    }

    /// A scope's calls in flight.
    pub fn in_flight(&self, scope: &Scope) -> usize {
        self.shared
            .controllers
            .find(scope)
            .map_or(0, |c| c.limiter.in_flight())
    }

    /// Every scope at a glance.
    pub fn snapshot(&self) -> Vec<OverloadSnapshot> {
        let now = Instant::now();
        self.shared
            .controllers
            .all()
            .into_iter()
            .map(|(_, c)| OverloadSnapshot {
                scope: c.scope().clone(),
                state: c.state_at(now),
                limit: c.limiter.limit(),
                in_flight: c.limiter.in_flight(),
                bad_share: c.bad_share(now),
                rejection_probability: c.rejection_probability(false),
            })
            .collect()
    }

    /// How many requests a batcher should merge into one upstream call for `scope`, at most
    /// `max`: see [`recommended_batch_size`](crate::recommended_batch_size). 1 while the
    /// scope's breaker is open (told by the layer's breaker probe).
    pub fn recommended_batch_size(&self, scope: &Scope, max: usize) -> usize {
        let breaker_open = self
            .shared
            .settings
            .breaker
            .as_ref()
            .is_some_and(|probe| probe(scope));
        let (state, bad_share) = match self.shared.controllers.find(scope) {
            Some(c) => {
                let now = Instant::now();
                (c.state_at(now), c.bad_share(now))
            }
            None => (OverloadState::Normal, 0.0),
        };
        crate::recommended_batch_size(max, state, bad_share, breaker_open)
    }

    /// Every state transition from now on (also emitted as `tracing` events).
    pub fn subscribe(&self) -> broadcast::Receiver<OverloadEvent> {
        self.shared.controllers.subscribe()
    }
}
