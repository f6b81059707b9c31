use std::sync::Arc;

use tollgate_core::error::ConfigError;
use tower::Layer;

use crate::config::CircuitConfig;
use crate::handle::CircuitHandle;
use crate::policy::{DefaultPolicy, FailurePolicy};
use crate::registry::{DEFAULT_MAX_SCOPES, Registry};
use crate::service::CircuitBreaker;

/// Fails fast while an upstream is down; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share the circuits (and a [`handle`](Self::handle) reaches them).
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<P = DefaultPolicy> {
    registry: Arc<Registry>,
    policy: P,
}

impl CircuitBreakerLayer {
    /// One circuit per scope (provider, key, model), each with `config`.
    ///
    /// # Errors
    ///
    /// An invalid configuration value.
    pub fn new(config: CircuitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            registry: Arc::new(Registry::new(config, false, DEFAULT_MAX_SCOPES)),
            policy: DefaultPolicy::new(),
        })
    }

    /// One circuit for every request through the layer.
    ///
    /// # Errors
    ///
    /// An invalid configuration value.
    pub fn shared(config: CircuitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            registry: Arc::new(Registry::new(config, true, 1)),
            policy: DefaultPolicy::new(),
        })
    }

    /// One circuit per scope, keeping at most `max_scopes` (closed circuits with no failure
    /// counted are forgotten to make room; when every kept circuit is busy, a new scope's
    /// circuit is not kept and sees only its own request — see
    /// [`ScopeMap`](tollgate_core::ScopeMap)).
    ///
    /// # Errors
    ///
    /// An invalid configuration value.
    pub fn with_max_scopes(config: CircuitConfig, max_scopes: usize) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            registry: Arc::new(Registry::new(config, false, max_scopes)),
            policy: DefaultPolicy::new(),
        })
    }
}

impl<P> CircuitBreakerLayer<P> {
    /// Decides failures with `policy` instead of the default.
    pub fn with_policy<P2: FailurePolicy>(self, policy: P2) -> CircuitBreakerLayer<P2> {
        CircuitBreakerLayer {
            registry: self.registry,
            policy,
        }
    }

    /// A handle to read, subscribe to and steer the circuits.
    pub fn handle(&self) -> CircuitHandle {
        CircuitHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<S, P: Clone> Layer<S> for CircuitBreakerLayer<P> {
    type Service = CircuitBreaker<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.registry.clone(), self.policy.clone())
    }
}
