//! [`ScopeRegistry`]: the one way a layer keeps per-scope state — a breaker, an adaptive
//! limit, a rate limit's cells — and tells the world when that state changes.
//!
//! Every stateful layer needs the same three things: one value per [`Scope`] (or one value
//! shared by every request), a bound on how many scopes it keeps whatever scopes clients make
//! up, and a channel of events a handle can subscribe to. Keeping them in one place means one
//! bound, one eviction rule and one way to read the state, whichever layer holds it.

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{LlmRequest, Provider, Scope, ScopeMap};

/// How many scopes a registry keeps by default, in every layer.
pub const DEFAULT_MAX_SCOPES: usize = 10_000;

/// How many events a slow subscriber may fall behind before it gets
/// [`Lagged`](broadcast::error::RecvError::Lagged) and continues from the newest.
pub const EVENT_CAPACITY: usize = 256;

/// The scope of a registry's one shared value, and of requests that carry no
/// [`LlmRequest`].
pub const SHARED_SCOPE: Scope = Scope::new(Provider::OpenAiCompatible);

/// Whether a registry keeps one value for every request or one per scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeMode {
    /// One value, whatever the scope (reported under [`SHARED_SCOPE`]).
    Shared,
    /// One value per scope, at most `max_scopes` of them (at least one) kept.
    PerScope {
        /// The bound: see [`ScopeMap`] for what happens past it.
        max_scopes: usize,
    },
}

impl Default for ScopeMode {
    /// One value per scope, at most [`DEFAULT_MAX_SCOPES`].
    fn default() -> Self {
        Self::PerScope {
            max_scopes: DEFAULT_MAX_SCOPES,
        }
    }
}

type Make<T, E> = Box<dyn Fn(&Scope, &broadcast::Sender<E>) -> T + Send + Sync>;

/// One `T` for every request, or one per [`Scope`] kept in a bounded [`ScopeMap`]; and a
/// channel of `E` events its values emit.
///
/// Values are made on first use by the registry's `make`, which is handed the scope and the
/// event sender to keep. When the map is full, values `idle` says can be forgotten without
/// loss (and that no caller holds) are dropped to make room.
///
/// # Lookups
///
/// [`get_for`](Self::get_for) finds a request's value without a lock, an allocation or a
/// clone of its scope once the scope is known; in shared mode it is an `Arc` clone.
///
/// # Events
///
/// [`subscribe`](Self::subscribe) receives every event sent from then on, through a
/// [`broadcast`] channel of [`EVENT_CAPACITY`]; a registry whose values emit nothing uses
/// `E = ()`.
pub struct ScopeRegistry<T, E = ()> {
    shared: Option<Arc<T>>,
    scopes: ScopeMap<T>,
    events: broadcast::Sender<E>,
    make: Make<T, E>,
    idle: fn(&T) -> bool,
}

impl<T, E> fmt::Debug for ScopeRegistry<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeRegistry")
            .field("shared", &self.shared.is_some())
            .field("scopes", &self.len())
            .field("max_scopes", &self.max_scopes())
            .finish_non_exhaustive()
    }
}

impl<T, E: Clone> ScopeRegistry<T, E> {
    /// A registry in `mode` whose values `make` builds (given their scope and the event sender)
    /// and `idle` says may be forgotten. In shared mode the one value is made now, for
    /// [`SHARED_SCOPE`].
    pub fn new(
        mode: ScopeMode,
        make: impl Fn(&Scope, &broadcast::Sender<E>) -> T + Send + Sync + 'static,
        idle: fn(&T) -> bool,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (shared, max_scopes) = match mode {
            ScopeMode::Shared => (Some(Arc::new(make(&SHARED_SCOPE, &events))), 1),
            ScopeMode::PerScope { max_scopes } => (None, max_scopes),
        };
        Self {
            shared,
            scopes: ScopeMap::new(max_scopes),
            events,
            make: Box::new(make),
            idle,
        }
    }
}

impl<T, E> ScopeRegistry<T, E> {
    /// The value of a request's scope, made on first use; found without building the scope.
    #[inline]
    pub fn get_for(&self, llm: &LlmRequest) -> Arc<T> {
        match &self.shared {
            Some(shared) => shared.clone(),
            None => self
                .scopes
                .get_for(llm, |scope| self.make(scope), self.idle),
        }
    }

    /// The value of a request, of [`SHARED_SCOPE`] when it carries no [`LlmRequest`].
    #[inline]
    pub fn for_request(&self, llm: Option<&LlmRequest>) -> Arc<T> {
        match llm {
            Some(llm) => self.get_for(llm),
            None => self.get(&SHARED_SCOPE),
        }
    }

    /// The value of `scope`, made on first use.
    pub fn get(&self, scope: &Scope) -> Arc<T> {
        match &self.shared {
            Some(shared) => shared.clone(),
            None => self.scopes.get(scope, |scope| self.make(scope), self.idle),
        }
    }

    /// The value of `scope` if it is kept (the shared value, in shared mode).
    pub fn find(&self, scope: &Scope) -> Option<Arc<T>> {
        match &self.shared {
            Some(shared) => Some(shared.clone()),
            None => self.scopes.find(scope),
        }
    }

    /// The one shared value, in shared mode.
    pub fn shared(&self) -> Option<&Arc<T>> {
        self.shared.as_ref()
    }

    /// Every kept scope and its value (the shared value under [`SHARED_SCOPE`]).
    pub fn all(&self) -> Vec<(Scope, Arc<T>)> {
        match &self.shared {
            Some(shared) => vec![(SHARED_SCOPE, shared.clone())],
            None => self.scopes.all(),
        }
    }

    /// Calls `visit` with every kept scope and its value, without holding a lock while it
    /// runs.
    pub fn for_each(&self, mut visit: impl FnMut(&Scope, &Arc<T>)) {
        match &self.shared {
            Some(shared) => visit(&SHARED_SCOPE, shared),
            None => self.scopes.for_each(visit),
        }
    }

    /// How many values are kept (1 in shared mode).
    pub fn len(&self) -> usize {
        match &self.shared {
            Some(_) => 1,
            None => self.scopes.len(),
        }
    }

    /// Whether no value is kept (never, in shared mode).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most values kept (1 in shared mode).
    pub fn max_scopes(&self) -> usize {
        match &self.shared {
            Some(_) => 1,
            None => self.scopes.max(),
        }
    }

    /// Every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<E> {
        self.events.subscribe()
    }

    /// The sender values emit their events through (the one `make` is handed).
    pub fn events(&self) -> &broadcast::Sender<E> {
        &self.events
    }

    fn make(&self, scope: &Scope) -> T {
        (self.make)(scope, &self.events)
    }
}
