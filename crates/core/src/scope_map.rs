//! [`ScopeMap`]: per-scope state (a breaker, an adaptive limit) found without a lock or a clone
//! on every call.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use hashbrown::{Equivalent, HashMap};

use crate::{LlmRequest, Provider, Scope};

/// One `T` per [`Scope`], created on first use, bounded in size.
///
/// Lookups read a snapshot of the map without a lock and without building a `Scope` (the
/// request's fields are hashed in place). A new scope replaces the snapshot whole, under a
/// mutex; that happens once per scope, so rarely. When the map is full, the entries `idle`
/// says can go — and that nothing else holds — are dropped to make room.
pub struct ScopeMap<T> {
    scopes: ArcSwap<HashMap<Scope, Arc<T>>>,
    inserting: Mutex<()>,
    max: usize,
}

impl<T> fmt::Debug for ScopeMap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeMap")
            .field("scopes", &self.len())
            .field("max", &self.max)
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

impl<T> ScopeMap<T> {
    /// An empty map holding at most `max` scopes (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            scopes: ArcSwap::from_pointee(HashMap::new()),
            inserting: Mutex::new(()),
            max: max.max(1),
        }
    }

    /// The state of a request's scope, made by `make` on first use.
    pub fn get_for(
        &self,
        llm: &LlmRequest,
        make: impl FnOnce(&Scope) -> T,
        idle: impl Fn(&T) -> bool,
    ) -> Arc<T> {
        if let Some(found) = self.scopes.load().get(&ScopeView::of(llm)) {
            return found.clone();
        }
        self.get(&llm.scope(), make, idle)
    }

    /// The state of `scope`, made by `make` on first use.
    pub fn get(
        &self,
        scope: &Scope,
        make: impl FnOnce(&Scope) -> T,
        idle: impl Fn(&T) -> bool,
    ) -> Arc<T> {
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
        let mut scopes: HashMap<Scope, Arc<T>> = HashMap::clone(&current);
        if scopes.len() >= self.max {
            // One reference is the map's, one the snapshot being replaced: anything more is a
            // caller still using the state.
            scopes.retain(|_, state| Arc::strong_count(state) > 2 || !idle(state));
        }
        let state = Arc::new(make(scope));
        scopes.insert(scope.clone(), state.clone());
        self.scopes.store(Arc::new(scopes));
        state
    }

    /// The state of `scope`, if it exists.
    pub fn find(&self, scope: &Scope) -> Option<Arc<T>> {
        self.scopes.load().get(scope).cloned()
    }

    /// Every scope and its state.
    pub fn all(&self) -> Vec<(Scope, Arc<T>)> {
        self.scopes
            .load()
            .iter()
            .map(|(scope, state)| (scope.clone(), state.clone()))
            .collect()
    }

    /// How many scopes are kept.
    pub fn len(&self) -> usize {
        self.scopes.load().len()
    }

    /// Whether no scope is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use crate::{CredentialId, EndpointKind};

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
        let map = ScopeMap::new(10);
        let created = map.get_for(&llm, |_| 1, |_| true);
        assert!(
            Arc::ptr_eq(&created, &map.get_for(&llm, |_| 2, |_| true)),
            "found again by view"
        );
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_full_map_drops_idle_unused_scopes_only() {
        let map = ScopeMap::new(2);
        let scope = |model: &str| Scope::new(Provider::OpenAi).with_model(Some(model.into()));
        let held = map.get(&scope("a"), |_| false, |idle| *idle);
        map.get(&scope("b"), |_| true, |idle| *idle);
        map.get(&scope("c"), |_| true, |idle| *idle);
        assert!(map.find(&scope("a")).is_some(), "held by a caller");
        assert!(map.find(&scope("b")).is_none(), "idle and unused: dropped");
        assert!(map.find(&scope("c")).is_some());
        drop(held);
        map.get(&scope("d"), |_| true, |idle| *idle);
        assert!(map.find(&scope("a")).is_some(), "busy (not idle) stays");
        assert!(map.find(&scope("c")).is_none());
        assert_eq!(map.len(), 2);
    }
}
