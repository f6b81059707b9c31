use std::sync::Arc;

use tokio::time::Instant;
use tollgate_core::error::ConfigError;
use tollgate_core::{ScopeMode, ScopeRegistry};
use tower::Layer;

use crate::breaker::Breaker;
use crate::config::CircuitConfig;
use crate::handle::CircuitHandle;
use crate::policy::{DefaultPolicy, FailurePolicy};
use crate::service::CircuitBreaker;
use crate::state::CircuitEvent;

/// The circuits of every scope, or the one shared circuit, and their events.
pub(crate) type Breakers = ScopeRegistry<Breaker, CircuitEvent>;

/// Circuits made closed with `config`; closed circuits with nothing against them can be
/// forgotten without loss.
fn breakers(config: CircuitConfig, mode: ScopeMode) -> Arc<Breakers> {
    let config = Arc::new(config);
    let epoch = Instant::now();
    Arc::new(ScopeRegistry::new(
        mode,
        move |scope, events| {
            Breaker::new(
                scope.clone(),
                config.clone(),
                config.mode,
                epoch,
                events.clone(),
            )
        },
        Breaker::is_idle,
    ))
}

/// Circuits as [`breakers`] makes them, each with its side of the fleet behind `hook`, and
/// starting from the fleet's record of its scope.
#[cfg(feature = "redis")]
fn fleet_breakers(
    config: Arc<CircuitConfig>,
    mode: ScopeMode,
    hook: Arc<crate::fleet::Hook>,
) -> Arc<Breakers> {
    let epoch = Instant::now();
    Arc::new(ScopeRegistry::new(
        mode,
        move |scope, events| {
            let breaker = Breaker::new(
                scope.clone(),
                config.clone(),
                config.mode,
                epoch,
                events.clone(),
            )
            .with_fleet(crate::fleet::FleetSide::new(hook.clone(), scope));
            crate::fleet::seed(&breaker);
            breaker
        },
        Breaker::is_idle,
    ))
}

/// Fails fast while an upstream is down; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share the circuits (and a [`handle`](Self::handle) reaches them).
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<P = DefaultPolicy> {
    breakers: Arc<Breakers>,
    policy: P,
    /// What the circuits are made with, kept to make them again for a fleet.
    config: Arc<CircuitConfig>,
    scopes: ScopeMode,
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
            config: Arc::new(config.clone()),
            breakers: breakers(config, ScopeMode::default()),
            policy: DefaultPolicy::new(),
            scopes: ScopeMode::default(),
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
            config: Arc::new(config.clone()),
            breakers: breakers(config, ScopeMode::Shared),
            policy: DefaultPolicy::new(),
            scopes: ScopeMode::Shared,
        })
    }

    /// One circuit per scope, keeping at most `max_scopes` (closed circuits with no failure
    /// counted are forgotten to make room; when every kept circuit is busy, a new scope's
    /// circuit is not kept and sees only its own request — see
    /// [`ScopeMap`](tollgate_core::ScopeMap)). The default is
    /// [`DEFAULT_MAX_SCOPES`](crate::DEFAULT_MAX_SCOPES).
    ///
    /// # Errors
    ///
    /// An invalid configuration value.
    pub fn with_max_scopes(config: CircuitConfig, max_scopes: usize) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config.clone()),
            breakers: breakers(config, ScopeMode::PerScope { max_scopes }),
            policy: DefaultPolicy::new(),
            scopes: ScopeMode::PerScope { max_scopes },
        })
    }
}

impl<P> CircuitBreakerLayer<P> {
    /// Decides failures with `policy` instead of the default.
    pub fn with_policy<P2: FailurePolicy>(self, policy: P2) -> CircuitBreakerLayer<P2> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            policy,
            config: self.config,
            scopes: self.scopes,
        }
    }

    /// Shares the circuits with every process that uses the same Redis and prefix: a circuit
    /// that opens in one process opens in all, half-open probes are counted for the whole
    /// fleet, and a [`CircuitHandle`] steers every process's circuit (see
    /// [`RedisBreakerState`](crate::RedisBreakerState)). Calls never wait on Redis.
    ///
    /// Call it before [`handle`](Self::handle) and before building services: the circuits are
    /// made anew, and the worker that keeps them in step runs on the runtime `state` was
    /// connected on, until the layer and its services are dropped.
    #[cfg(feature = "redis")]
    pub fn with_redis(mut self, state: crate::RedisBreakerState) -> Self {
        let hook = Arc::new(crate::fleet::Hook::new(state.link.clone()));
        self.breakers = fleet_breakers(self.config.clone(), self.scopes, hook.clone());
        state.attach(Arc::downgrade(&self.breakers), hook, self.config.clone());
        self
    }

    /// A handle to read, subscribe to and steer the circuits.
    pub fn handle(&self) -> CircuitHandle {
        CircuitHandle {
            breakers: self.breakers.clone(),
        }
    }
}

impl<S, P: Clone> Layer<S> for CircuitBreakerLayer<P> {
    type Service = CircuitBreaker<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breakers.clone(), self.policy.clone())
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::{EndpointKind, LlmRequest, Provider, Scope};

    use super::*;

    /// An Anthropic request to `model`.
    fn request(model: &str) -> LlmRequest {
        let mut llm = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
        llm.model = Some(model.into());
        llm
    }

    #[test]
    fn a_request_finds_its_scopes_circuit_again() {
        let layer = CircuitBreakerLayer::new(CircuitConfig::default()).unwrap();
        let llm = request("claude");
        let created = layer.breakers.get_for(&llm);
        assert!(Arc::ptr_eq(&created, &layer.breakers.get_for(&llm)));
        assert!(Arc::ptr_eq(&created, &layer.breakers.get(&llm.scope())));
        assert_eq!(layer.breakers.len(), 1);
        assert_eq!(layer.breakers.max_scopes(), crate::DEFAULT_MAX_SCOPES);
    }

    #[test]
    fn a_shared_layer_has_one_circuit_for_every_scope() {
        let layer = CircuitBreakerLayer::shared(CircuitConfig::default()).unwrap();
        let one = layer.breakers.get_for(&request("a"));
        assert!(Arc::ptr_eq(&one, &layer.breakers.get_for(&request("b"))));
        let other = Scope::new(Provider::Gemini);
        assert!(Arc::ptr_eq(&one, &layer.breakers.get(&other)));
        assert_eq!(layer.handle().snapshot().len(), 1);
    }

    #[test]
    fn closed_circuits_with_nothing_against_them_make_room() {
        let layer = CircuitBreakerLayer::with_max_scopes(CircuitConfig::default(), 2).unwrap();
        for model in ["a", "b", "c", "d"] {
            drop(layer.breakers.get_for(&request(model)));
            assert!(layer.breakers.len() <= 2);
        }
        layer.handle().force_open(&request("d").scope());
        assert_eq!(
            layer.handle().state(&request("d").scope()),
            crate::CircuitState::ForcedOpen
        );
    }
}
