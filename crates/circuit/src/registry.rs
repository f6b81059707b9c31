//! The circuits of every scope, or the one shared circuit.

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tollgate_core::{LlmRequest, Provider, Scope, ScopeMap};

use crate::breaker::Breaker;
use crate::config::CircuitConfig;
use crate::state::CircuitEvent;

/// How many scopes' circuits are kept by default.
pub const DEFAULT_MAX_SCOPES: usize = 10_000;

pub(crate) struct Registry {
    config: Arc<CircuitConfig>,
    epoch: Instant,
    events: broadcast::Sender<CircuitEvent>,
    shared: Option<Arc<Breaker>>,
    scopes: ScopeMap<Breaker>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .field("shared", &self.shared.is_some())
            .field("scopes", &self.len())
            .finish()
    }
}

/// The scope of the one shared circuit.
pub(crate) fn shared_scope() -> Scope {
    Scope::new(Provider::OpenAiCompatible)
}

impl Registry {
    pub(crate) fn new(config: CircuitConfig, shared: bool, max_scopes: usize) -> Self {
        let config = Arc::new(config);
        let epoch = Instant::now();
        let (events, _) = broadcast::channel(256);
        let shared = shared.then(|| {
            Arc::new(Breaker::new(
                shared_scope(),
                config.clone(),
                config.mode,
                epoch,
                events.clone(),
            ))
        });
        Self {
            config,
            epoch,
            events,
            shared,
            scopes: ScopeMap::new(max_scopes),
        }
    }

    /// The one shared circuit, if the registry has one.
    pub(crate) fn shared(&self) -> Option<&Arc<Breaker>> {
        self.shared.as_ref()
    }

    fn make(&self, scope: &Scope) -> Breaker {
        Breaker::new(
            scope.clone(),
            self.config.clone(),
            self.config.mode,
            self.epoch,
            self.events.clone(),
        )
    }

    /// The circuit of a request's scope, found without building the scope.
    pub(crate) fn get_for(&self, llm: &LlmRequest) -> Arc<Breaker> {
        match &self.shared {
            Some(shared) => shared.clone(),
            // Closed circuits with nothing against them can be forgotten without loss.
            None => self
                .scopes
                .get_for(llm, |scope| self.make(scope), Breaker::is_idle),
        }
    }

    /// The circuit of `scope`, created closed on first use.
    pub(crate) fn get(&self, scope: &Scope) -> Arc<Breaker> {
        match &self.shared {
            Some(shared) => shared.clone(),
            None => self
                .scopes
                .get(scope, |scope| self.make(scope), Breaker::is_idle),
        }
    }

    /// The circuit of `scope` if it exists.
    pub(crate) fn find(&self, scope: &Scope) -> Option<Arc<Breaker>> {
        if let Some(shared) = &self.shared {
            return Some(shared.clone());
        }
        self.scopes.find(scope)
    }

    /// Every circuit.
    pub(crate) fn all(&self) -> Vec<(Scope, Arc<Breaker>)> {
        match &self.shared {
            Some(shared) => vec![(shared_scope(), shared.clone())],
            None => self.scopes.all(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.shared {
            Some(_) => 1,
            None => self.scopes.len(),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<CircuitEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::{CredentialId, EndpointKind};

    use super::*;

    #[test]
    fn a_request_finds_its_scopes_circuit_again() {
        let mut llm = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
        llm.credential = Some(CredentialId::named("team-a"));
        llm.model = Some("claude".into());
        let registry = Registry::new(crate::CircuitConfig::default(), false, 10);
        let created = registry.get_for(&llm);
        assert!(Arc::ptr_eq(&created, &registry.get_for(&llm)));
        assert!(Arc::ptr_eq(&created, &registry.get(&llm.scope())));
        assert_eq!(registry.len(), 1);
    }
}
