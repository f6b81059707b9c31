use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;

use crate::{CredentialId, EndpointKind};

use super::*;

fn scope(model: &str) -> Scope {
    Scope::new(Provider::OpenAi).with_model(Some(model.into()))
}

fn folds<T>(map: &ScopeMap<T>) -> usize {
    map.lock().folds
}

fn warnings<T>(map: &ScopeMap<T>) -> usize {
    map.lock().warnings
}

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

#[tokio::test(start_paused = true)]
async fn a_busy_full_map_hands_out_a_state_it_does_not_keep() {
    let map = ScopeMap::new(2);
    let a = map.get(&scope("a"), |_| AtomicBool::new(true), |_| true);
    let b = map.get(
        &scope("b"),
        |_| AtomicBool::new(false),
        |s| s.load(Ordering::Relaxed),
    );
    // "a" is held, "b" is busy: no room for "c".
    let c = map.get(
        &scope("c"),
        |_| AtomicBool::new(true),
        |s| s.load(Ordering::Relaxed),
    );
    c.store(false, Ordering::Relaxed);
    assert!(!c.load(Ordering::Relaxed), "a usable state");
    assert_eq!(map.len(), 2);
    assert!(map.find(&scope("c")).is_none(), "not kept");
    let again = map.get(
        &scope("c"),
        |_| AtomicBool::new(true),
        |s| s.load(Ordering::Relaxed),
    );
    assert!(!Arc::ptr_eq(&c, &again), "the next request starts afresh");
    assert_eq!(warnings(&map), 1, "said once");
    tokio::time::advance(Duration::from_secs(61)).await;
    map.get(
        &scope("d"),
        |_| AtomicBool::new(true),
        |s| s.load(Ordering::Relaxed),
    );
    assert_eq!(warnings(&map), 2, "and again a minute later");
    // Once "b" is idle and "a" let go, new scopes are kept again.
    drop((a, c, again));
    b.store(true, Ordering::Relaxed);
    drop(b);
    let e = map.get(
        &scope("e"),
        |_| AtomicBool::new(true),
        |s| s.load(Ordering::Relaxed),
    );
    assert!(Arc::ptr_eq(&e, &map.find(&scope("e")).unwrap()));
    assert!(map.len() <= 2);
}

#[test]
fn twenty_thousand_scopes_through_a_map_of_64_cost_few_folds() {
    let map = ScopeMap::new(64);
    let mut replaced = 0;
    let mut last = map.snapshot.load_full();
    for n in 0..20_000 {
        drop(map.get(&scope(&format!("made-up-{n}")), |_| (), |()| true));
        let now = map.snapshot.load_full();
        replaced += usize::from(!Arc::ptr_eq(&last, &now));
        last = now;
        assert!(map.len() <= 64);
    }
    assert_eq!(replaced, folds(&map));
    // A copy of the whole map per new scope would be 20,000 folds; a fold per batch of new
    // scopes is a small fraction of that.
    assert!(replaced <= 20_000 / 6, "{replaced} folds");
}

#[test]
fn a_full_map_of_busy_scopes_is_walked_rarely() {
    let map = ScopeMap::new(64);
    let asked = std::cell::Cell::new(0);
    let busy = |_: &()| {
        asked.set(asked.get() + 1);
        false
    };
    for n in 0..64 {
        map.get(&scope(&format!("busy-{n}")), |_| (), busy);
    }
    for n in 0..1_000 {
        map.get(&scope(&format!("made-up-{n}")), |_| (), busy);
    }
    assert_eq!(map.len(), 64);
    // A walk asks about each of the 64 scopes; one walk per eighth of the map in new scopes,
    // not one per new scope (64,000).
    assert!(asked.get() <= (1_000 / 8 + 1) * 64, "{}", asked.get());
}

#[test]
fn scopes_in_use_move_to_the_lock_free_snapshot() {
    let map = ScopeMap::new(1_000);
    for n in 0..100 {
        map.get(&scope(&format!("m-{n}")), |_| (), |()| true);
    }
    let late = scope("late");
    map.get(&late, |_| (), |()| true);
    assert!(map.snapshot.load().get(&late).is_none(), "in the side map");
    for _ in 0..map.snapshot.load().len() {
        map.get(&late, |_| (), |()| true);
    }
    assert!(
        map.snapshot.load().get(&late).is_some(),
        "folded once its lookups paid for the copy"
    );
    assert_eq!(map.len(), 101);
}

#[test]
fn long_model_names_are_cut_in_warnings() {
    assert_eq!(model_prefix(Some("gpt-4o")), "gpt-4o");
    assert_eq!(model_prefix(None), "-");
    let long = "é".repeat(100);
    assert_eq!(model_prefix(Some(&long)).chars().count(), MODEL_PREFIX);
}

#[derive(Clone, Debug)]
enum Op {
    /// Looks a scope up and holds the state.
    Hold(u8),
    /// Looks a scope up and lets go at once.
    Touch(u8),
    /// Lets go of a held state.
    Release(usize),
    /// Marks a held state busy or idle.
    SetIdle(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(Op::Hold),
        any::<u8>().prop_map(Op::Touch),
        any::<usize>().prop_map(Op::Release),
        (any::<usize>(), any::<bool>()).prop_map(|(i, idle)| Op::SetIdle(i, idle)),
    ]
}

proptest! {
    /// Whatever scopes are asked for, held, let go or made busy, the map keeps at most `max`,
    /// keeps a scope once (snapshot or side map), and a kept scope's state is the one handed
    /// out.
    #[test]
    fn the_map_never_keeps_more_than_max(
        max in 1usize..40,
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let map = ScopeMap::new(max);
        let mut held: Vec<(Scope, Arc<AtomicBool>)> = Vec::new();
        let idle = |s: &AtomicBool| s.load(Ordering::Relaxed);
        for op in ops {
            match op {
                Op::Hold(n) | Op::Touch(n) => {
                    let scope = scope(&format!("m-{n}"));
                    let kept = map.find(&scope);
                    let state = map.get(&scope, |_| AtomicBool::new(true), idle);
                    if let Some(kept) = kept {
                        prop_assert!(Arc::ptr_eq(&kept, &state));
                    }
                    if matches!(op, Op::Hold(_)) {
                        held.push((scope, state));
                    }
                }
                Op::Release(i) if !held.is_empty() => {
                    held.swap_remove(i % held.len());
                }
                Op::SetIdle(i, idle) if !held.is_empty() => {
                    held[i % held.len()].1.store(idle, Ordering::Relaxed);
                }
                Op::Release(_) | Op::SetIdle(..) => {}
            }
            prop_assert!(map.len() <= max, "{} > {max}", map.len());
            let fresh = map.lock();
            let snapshot = map.snapshot.load();
            prop_assert!(fresh.side.keys().all(|scope| !snapshot.contains_key(scope)));
        }
    }
}
