//! [`ScopeMap`]: per-scope state (a breaker, an adaptive limit) found without a lock or a clone
//! on every call, and never more of it than the bound, whatever scopes clients make up.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hashbrown::{Equivalent, HashMap};
use tokio::time::Instant;

use crate::{LlmRequest, Provider, Scope};

/// A side map this small is folded into the snapshot even when the snapshot is smaller than
/// four times it: fewer copies while a map fills from empty.
const MIN_FOLD: usize = 8;

/// At most one warning about scopes not kept in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Characters of a model name a warning shows: the name comes from the client.
const MODEL_PREFIX: usize = 32;

/// One `T` per [`Scope`], created on first use, never more than `max` of them kept.
///
/// # Lookups
///
/// A lookup reads a snapshot of the map without a lock, without an allocation and without
/// building a `Scope` (the request's fields are hashed in place). A new scope does not copy the
/// snapshot: it goes into a small side map under a mutex, and the side map is folded into a new
/// snapshot in batches — once it holds a quarter of the snapshot's size, or once lookups have
/// found scopes there as many times as the snapshot has entries (a scope in use soon moves to
/// the lock-free snapshot). Each fold copies the snapshot once, so a new scope costs an
/// amortised constant number of copies, not a copy of the whole map.
///
/// # Bound
///
/// The model comes from the client, so a client can make up as many scopes as it likes. The
/// map never keeps more than `max`: when it is full, the scopes `idle` says can go and that no
/// caller holds are dropped to make room (forgetting them loses nothing). When none can go,
/// the new scope's state is still made and returned, but not kept: it lives as long as its
/// callers hold it, and the scope's next request starts from a fresh state. That is logged
/// (`tracing::warn!`) at most once a minute, with the provider and the first 32 characters of
/// the model — never the credential.
///
/// Finding idle scopes walks the whole map. After a walk that freed less than an eighth of it,
/// the map turns away the next new scopes, up to that eighth, before walking again; so a map
/// full of busy scopes costs an amortised constant amount of work per new scope too.
pub struct ScopeMap<T> {
    snapshot: ArcSwap<HashMap<Scope, Arc<T>>>,
    fresh: Mutex<Fresh<T>>,
    max: usize,
}

/// What changes under the mutex: the scopes not yet in the snapshot, and the bookkeeping of
/// folds, walks and warnings.
struct Fresh<T> {
    /// Scopes kept but not yet in the snapshot; never in both.
    side: HashMap<Scope, Arc<T>>,
    /// Lookups that found a scope in `side` since the last fold.
    side_hits: usize,
    /// New scopes to turn away before the next walk for idle scopes.
    walk_after: usize,
    /// When a warning about scopes not kept was last logged.
    warned_at: Option<Instant>,
    /// Scopes not kept since that warning.
    unkept: u64,
    /// Folds so far, for tests.
    #[cfg(test)]
    folds: usize,
    /// Warnings logged so far, for tests.
    #[cfg(test)]
    warnings: usize,
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
    /// An empty map keeping at most `max` scopes (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(HashMap::new()),
            fresh: Mutex::new(Fresh {
                side: HashMap::new(),
                side_hits: 0,
                walk_after: 0,
                warned_at: None,
                unkept: 0,
                #[cfg(test)]
                folds: 0,
                #[cfg(test)]
                warnings: 0,
            }),
            max: max.max(1),
        }
    }

    /// The state of a request's scope, made by `make` on first use; `idle` says whether a
    /// state can be forgotten without loss when room is needed.
    pub fn get_for(
        &self,
        llm: &LlmRequest,
        make: impl FnOnce(&Scope) -> T,
        idle: impl Fn(&T) -> bool,
    ) -> Arc<T> {
        let view = ScopeView::of(llm);
        if let Some(found) = self.snapshot.load().get(&view) {
            return found.clone();
        }
        let mut fresh = self.lock();
        if let Some(found) = self.find_locked(&mut fresh, &view) {
            return found;
        }
        self.insert(fresh, &llm.scope(), make, idle)
    }

    /// The state of `scope`, made by `make` on first use; `idle` as for
    /// [`get_for`](Self::get_for).
    pub fn get(
        &self,
        scope: &Scope,
        make: impl FnOnce(&Scope) -> T,
        idle: impl Fn(&T) -> bool,
    ) -> Arc<T> {
        if let Some(found) = self.snapshot.load().get(scope) {
            return found.clone();
        }
        let mut fresh = self.lock();
        if let Some(found) = self.find_locked(&mut fresh, scope) {
            return found;
        }
        self.insert(fresh, scope, make, idle)
    }

    /// The state of `scope`, if it is kept.
    pub fn find(&self, scope: &Scope) -> Option<Arc<T>> {
        if let Some(found) = self.snapshot.load().get(scope) {
            return Some(found.clone());
        }
        let fresh = self.lock();
        match fresh.side.get(scope) {
            Some(found) => Some(found.clone()),
            None => self.snapshot.load().get(scope).cloned(),
        }
    }

    /// Every kept scope and its state.
    pub fn all(&self) -> Vec<(Scope, Arc<T>)> {
        let fresh = self.lock();
        let snapshot = self.snapshot.load();
        snapshot
            .iter()
            .chain(fresh.side.iter())
            .map(|(scope, state)| (scope.clone(), state.clone()))
            .collect()
    }

    /// Calls `visit` with every kept state, without holding a lock while it runs.
    pub fn for_each(&self, mut visit: impl FnMut(&Scope, &Arc<T>)) {
        let (snapshot, side) = {
            let fresh = self.lock();
            let side: Vec<_> = fresh
                .side
                .iter()
                .map(|(scope, state)| (scope.clone(), state.clone()))
                .collect();
            (self.snapshot.load_full(), side)
        };
        for (scope, state) in snapshot.iter() {
            visit(scope, state);
        }
        for (scope, state) in &side {
            visit(scope, state);
        }
    }

    /// Forgets every scope (their callers keep the states they hold).
    pub fn clear(&self) {
        let mut fresh = self.lock();
        fresh.side.clear();
        fresh.side_hits = 0;
        fresh.walk_after = 0;
        self.snapshot.store(Arc::new(HashMap::new()));
    }

    /// How many scopes are kept.
    pub fn len(&self) -> usize {
        let fresh = self.lock();
        self.snapshot.load().len() + fresh.side.len()
    }

    /// Whether no scope is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map's bound.
    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> MutexGuard<'_, Fresh<T>> {
        self.fresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A lookup that missed the snapshot: the side map, then the snapshot again (a fold may
    /// have moved the scope there since).
    fn find_locked<Q>(&self, fresh: &mut Fresh<T>, key: &Q) -> Option<Arc<T>>
    where
        Q: Hash + Equivalent<Scope> + ?Sized,
    {
        if let Some(found) = fresh.side.get(key).cloned() {
            fresh.side_hits += 1;
            self.fold_if_due(fresh);
            return Some(found);
        }
        self.snapshot.load().get(key).cloned()
    }

    /// Makes the state of a scope kept nowhere, and keeps it if there is room.
    fn insert(
        &self,
        mut fresh: MutexGuard<'_, Fresh<T>>,
        scope: &Scope,
        make: impl FnOnce(&Scope) -> T,
        idle: impl Fn(&T) -> bool,
    ) -> Arc<T> {
        let kept = self.snapshot.load().len() + fresh.side.len();
        if kept >= self.max && !self.make_room(&mut fresh, &idle) {
            self.turned_away(&mut fresh, scope);
            drop(fresh);
            return Arc::new(make(scope));
        }
        let state = Arc::new(make(scope));
        fresh.side.insert(scope.clone(), state.clone());
        self.fold_if_due(&mut fresh);
        state
    }

    /// Drops the idle scopes nobody holds; whether that made room. Walks the whole map, so
    /// after a walk that freed little the next few new scopes are turned away without one.
    fn make_room(&self, fresh: &mut Fresh<T>, idle: &impl Fn(&T) -> bool) -> bool {
        if fresh.walk_after > 0 {
            fresh.walk_after -= 1;
            return false;
        }
        let snapshot = self.snapshot.load_full();
        let kept = snapshot.len() + fresh.side.len();
        // The map's reference is the only one: no caller holds the state (an older snapshot a
        // reader still holds counts as a caller, which only errs towards keeping).
        let unused = |state: &Arc<T>| Arc::strong_count(state) == 1 && idle(state);
        let candidates = snapshot
            .values()
            .chain(fresh.side.values())
            .filter(|state| unused(state))
            .count();
        let mut freed = 0;
        if candidates > 0 {
            fresh.side.retain(|_, state| !unused(state));
            let mut next = HashMap::with_capacity(snapshot.len() + fresh.side.len());
            next.extend(
                snapshot
                    .iter()
                    .filter(|(_, state)| !unused(state))
                    .map(|(scope, state)| (scope.clone(), state.clone())),
            );
            next.extend(fresh.side.drain());
            freed = kept - next.len();
            self.store(fresh, next);
        }
        fresh.walk_after = (kept / 8).saturating_sub(freed);
        freed > 0
    }

    /// Folds the side map into a new snapshot when it has grown, or been looked in, enough
    /// for the copy to pay for itself.
    fn fold_if_due(&self, fresh: &mut Fresh<T>) {
        let snapshot = self.snapshot.load_full();
        let batch = (snapshot.len() / 4).max(MIN_FOLD).min(self.max);
        if fresh.side.len() < batch && fresh.side_hits < snapshot.len().max(1) {
            return;
        }
        let mut next = HashMap::with_capacity(snapshot.len() + fresh.side.len());
        next.extend(
            snapshot
                .iter()
                .map(|(scope, state)| (scope.clone(), state.clone())),
        );
        next.extend(fresh.side.drain());
        self.store(fresh, next);
    }

    fn store(&self, fresh: &mut Fresh<T>, next: HashMap<Scope, Arc<T>>) {
        self.snapshot.store(Arc::new(next));
        fresh.side_hits = 0;
        #[cfg(test)]
        {
            fresh.folds += 1;
        }
    }

    /// Counts a scope not kept, and says so at most once a minute.
    fn turned_away(&self, fresh: &mut Fresh<T>, scope: &Scope) {
        fresh.unkept += 1;
        let now = Instant::now();
        if fresh
            .warned_at
            .is_some_and(|at| now.saturating_duration_since(at) < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            max_scopes = self.max,
            not_kept = fresh.unkept,
            provider = scope.provider().as_str(),
            model = model_prefix(scope.model()),
            "every kept scope is busy: new scopes get a state that is not kept (it lives as long \
             as its request)"
        );
        fresh.warned_at = Some(now);
        fresh.unkept = 0;
        #[cfg(test)]
        {
            fresh.warnings += 1;
        }
    }
}

/// At most [`MODEL_PREFIX`] characters of a client's model name.
fn model_prefix(model: Option<&str>) -> &str {
    let model = model.unwrap_or("-");
    match model.char_indices().nth(MODEL_PREFIX) {
        Some((end, _)) => &model[..end],
        None => model,
    }
}

#[cfg(test)]
mod tests;
