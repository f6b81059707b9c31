//! [`RateLimitHandle`]: reading the limits of every scope, as every Tollgate handle reads its
//! state, with `snapshot()`.

use tokio::time::Instant;
use tollgate_core::Scope;

use crate::memory::{LimitState, MemoryStore};

/// Reads the limits of a [`RateLimitLayer`](crate::RateLimitLayer) over a [`MemoryStore`]:
/// for each scope and dimension, the quota, where it comes from ([`QuotaSource`]: configured,
/// the provider's headers, or learned from its refusals), what remains now and what requests
/// in flight hold.
///
/// Reading takes no lock a request waits on and costs requests nothing.
///
/// [`QuotaSource`]: crate::QuotaSource
///
/// # Clone
///
/// Clones read the same limits.
#[derive(Clone, Debug)]
pub struct RateLimitHandle {
    store: MemoryStore,
}

/// One scope's limits at a glance.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScopeLimits {
    /// The scope (without its model when the layer limits per key).
    pub scope: Scope,
    /// Each limited dimension as it stands.
    pub limits: Vec<LimitState>,
}

impl RateLimitHandle {
    pub(crate) fn new(store: MemoryStore) -> Self {
        Self { store }
    }

    /// Every kept scope with its limits.
    pub fn snapshot(&self) -> Vec<ScopeLimits> {
        let now = Instant::now();
        self.store
            .all()
            .into_iter()
            .map(|(scope, state)| ScopeLimits {
                scope,
                limits: state.limits(now),
            })
            .collect()
    }

    /// The limits of `scope` as they stand now (empty when the scope is not kept).
    pub fn limits(&self, scope: &Scope) -> Vec<LimitState> {
        self.store
            .find(scope)
            .map(|state| state.limits(Instant::now()))
            .unwrap_or_default()
    }

    /// How many scopes are kept.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no scope is kept.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}
