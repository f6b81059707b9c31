//! `ScopeRegistry`: shared or per scope, bounded, with events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::broadcast;
use tollgate_core::{
    CredentialId, DEFAULT_MAX_SCOPES, EndpointKind, LlmRequest, Provider, SHARED_SCOPE, Scope,
    ScopeMode, ScopeRegistry,
};

/// A value that remembers its scope, may be marked busy, and can announce itself.
#[derive(Debug)]
struct Cell {
    scope: Scope,
    busy: AtomicBool,
    events: broadcast::Sender<String>,
}

impl Cell {
    fn is_idle(&self) -> bool {
        !self.busy.load(Ordering::Relaxed)
    }

    fn announce(&self, what: &str) {
        let _ = self.events.send(format!("{} {what}", self.scope));
    }
}

fn registry(mode: ScopeMode) -> ScopeRegistry<Cell, String> {
    ScopeRegistry::new(
        mode,
        |scope, events| Cell {
            scope: scope.clone(),
            busy: AtomicBool::new(false),
            events: events.clone(),
        },
        Cell::is_idle,
    )
}

fn scope(model: &str) -> Scope {
    Scope::new(Provider::OpenAi).with_model(Some(model.into()))
}

fn request(model: &str) -> LlmRequest {
    let mut llm = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
    llm.credential = Some(CredentialId::named("team-a"));
    llm.model = Some(model.into());
    llm
}

#[test]
fn the_default_mode_is_per_scope_with_the_default_bound() {
    let registry = registry(ScopeMode::default());
    assert_eq!(registry.max_scopes(), DEFAULT_MAX_SCOPES);
    assert!(registry.is_empty());
    assert!(registry.shared().is_none());
}

#[test]
fn shared_mode_returns_the_same_value_for_every_scope() {
    let registry = registry(ScopeMode::Shared);
    let one = registry.get(&scope("a"));
    assert!(Arc::ptr_eq(&one, &registry.get(&scope("b"))));
    assert!(Arc::ptr_eq(&one, &registry.get_for(&request("c"))));
    assert!(Arc::ptr_eq(&one, &registry.for_request(None)));
    assert!(Arc::ptr_eq(&one, &registry.find(&scope("never")).unwrap()));
    assert_eq!(one.scope, SHARED_SCOPE);
    assert_eq!(registry.len(), 1);
    let all = registry.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, SHARED_SCOPE);
}

#[test]
fn per_scope_mode_keeps_one_value_per_scope_found_again_by_request_or_scope() {
    let registry = registry(ScopeMode::default());
    let llm = request("claude");
    let made = registry.get_for(&llm);
    assert_eq!(made.scope, llm.scope());
    assert!(Arc::ptr_eq(&made, &registry.get_for(&llm)));
    assert!(Arc::ptr_eq(&made, &registry.get(&llm.scope())));
    assert!(Arc::ptr_eq(&made, &registry.find(&llm.scope()).unwrap()));
    assert!(registry.find(&scope("unseen")).is_none());
    let unannotated = registry.for_request(None);
    assert_eq!(unannotated.scope, SHARED_SCOPE);
    assert_eq!(registry.len(), 2);
    let mut seen = Vec::new();
    registry.for_each(|scope, _| seen.push(scope.clone()));
    seen.sort();
    let mut all: Vec<_> = registry.all().into_iter().map(|(s, _)| s).collect();
    all.sort();
    assert_eq!(seen, all);
}

#[test]
fn per_scope_mode_is_bounded_and_forgets_only_idle_values() {
    let registry = registry(ScopeMode::PerScope { max_scopes: 2 });
    let busy = registry.get(&scope("busy"));
    busy.busy.store(true, Ordering::Relaxed);
    drop(busy);
    drop(registry.get(&scope("idle")));
    // Full: the idle one goes to make room, the busy one stays.
    drop(registry.get(&scope("new")));
    assert_eq!(registry.len(), 2);
    assert!(registry.find(&scope("busy")).is_some());
    assert!(registry.find(&scope("idle")).is_none());
    // Whatever scopes clients make up, no more than the bound is kept.
    registry
        .get(&scope("new"))
        .busy
        .store(true, Ordering::Relaxed);
    for n in 0..100 {
        let made_up = registry.get(&scope(&format!("made-up-{n}")));
        assert_eq!(made_up.scope, scope(&format!("made-up-{n}")), "usable");
        assert_eq!(registry.len(), 2);
    }
}

#[tokio::test]
async fn subscribers_see_the_events_values_send() {
    let registry = registry(ScopeMode::default());
    let mut events = registry.subscribe();
    registry.get(&scope("a")).announce("opened");
    let _ = registry.events().send("by hand".to_owned());
    assert_eq!(events.recv().await.unwrap(), "openai/-/a opened");
    assert_eq!(events.recv().await.unwrap(), "by hand");
}
