//! The circuits of every scope, or the one shared circuit.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use hashbrown::{Equivalent, HashMap};

use tokio::sync::broadcast;
use tokio::time::Instant;
use tollgate_core::{LlmRequest, Provider, Scope};

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
    /// Read without a lock on every call; replaced whole (under `inserting`) when a scope first
    /// appears, which is rare.
    scopes: ArcSwap<HashMap<Scope, Arc<Breaker>>>,
    inserting: Mutex<()>,
    max_scopes: usize,
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

/// A scope by borrowed parts: hashes exactly as the [`Scope`] it stands for (same fields, same
/// order, `&str` where the scope holds `Arc<str>`), so a lookup needs no clone.
#[derive(Hash)]
struct ScopeView<'a> {
    provider: Provider,
    credential: Option<&'a str>,
    model: Option<&'a str>,
}

impl<'a> ScopeView<'a> {
    fn of(llm: &'a LlmRequest) -> Self {
        Self {
            provider: llm.provider,
            credential: llm.credential.as_ref().map(|c| c.as_str()),
            model: llm.model.as_deref(),
        }
    }
}

impl Equivalent<Scope> for ScopeView<'_> {
    fn equivalent(&self, scope: &Scope) -> bool {
        self.provider == scope.provider()
            && self.credential == scope.credential().map(|c| c.as_str())
            && self.model == scope.model()
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
            scopes: ArcSwap::from_pointee(HashMap::new()),
            inserting: Mutex::new(()),
            max_scopes: max_scopes.max(1),
        }
    }

    /// The one shared circuit, if the registry has one.
    pub(crate) fn shared(&self) -> Option<&Arc<Breaker>> {
        self.shared.as_ref()
    }

    /// The circuit of a request's scope, found without building the scope.
    pub(crate) fn get_for(&self, llm: &LlmRequest) -> Arc<Breaker> {
        if let Some(found) = self.scopes.load().get(&ScopeView::of(llm)) {
            return found.clone();
        }
        self.get(&llm.scope())
    }

    /// The circuit of `scope`, created closed on first use.
    pub(crate) fn get(&self, scope: &Scope) -> Arc<Breaker> {
        if let Some(shared) = &self.shared {
            return shared.clone();
        }
        if let Some(found) = self.scopes.load().get(scope) {
            return found.clone();
        }
        let _inserting = self
            .inserting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.scopes.load_full();
        if let Some(found) = current.get(scope) {
            return found.clone();
        }
        let mut scopes: HashMap<Scope, Arc<Breaker>> = HashMap::clone(&current);
        if scopes.len() >= self.max_scopes {
            // Closed circuits with nothing against them can be forgotten without loss (one
            // reference is the map's, one the snapshot being replaced).
            scopes.retain(|_, breaker| Arc::strong_count(breaker) > 2 || !breaker.is_idle());
        }
        let breaker = Arc::new(Breaker::new(
            scope.clone(),
            self.config.clone(),
            self.config.mode,
            self.epoch,
            self.events.clone(),
        ));
        scopes.insert(scope.clone(), breaker.clone());
        self.scopes.store(Arc::new(scopes));
        breaker
    }

    /// The circuit of `scope` if it exists.
    pub(crate) fn find(&self, scope: &Scope) -> Option<Arc<Breaker>> {
        if let Some(shared) = &self.shared {
            return Some(shared.clone());
        }
        self.scopes.load().get(scope).cloned()
    }

    /// Every circuit.
    pub(crate) fn all(&self) -> Vec<(Scope, Arc<Breaker>)> {
        if let Some(shared) = &self.shared {
            return vec![(shared_scope(), shared.clone())];
        }
        let scopes = self.scopes.load();
        scopes
            .iter()
            .map(|(scope, breaker)| (scope.clone(), breaker.clone()))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        match &self.shared {
            Some(_) => 1,
            None => self.scopes.load().len(),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<CircuitEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use tollgate_core::{CredentialId, EndpointKind};

    use super::*;

    #[test]
    fn a_view_hashes_and_compares_as_its_scope() {
        let hasher = hashbrown::DefaultHashBuilder::default();
        let mut llm = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
        for (credential, model) in [
            (None, None),
            (Some("team-a"), None),
            (Some("team-a"), Some("claude")),
            (None, Some("m")),
        ] {
            llm.credential = credential.map(CredentialId::named);
            llm.model = model.map(Into::into);
            let scope = llm.scope();
            let view = ScopeView::of(&llm);
            assert_eq!(hasher.hash_one(&view), hasher.hash_one(&scope), "{scope}");
            assert!(view.equivalent(&scope));
        }
        let registry = Registry::new(crate::CircuitConfig::default(), false, 10);
        let created = registry.get_for(&llm);
        assert!(
            Arc::ptr_eq(&created, &registry.get_for(&llm)),
            "found again by view"
        );
        assert_eq!(registry.len(), 1);
    }
}
