use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use crate::handle::RateLimitHandle;
use crate::memory::MemoryStore;
use crate::quota::{QuotaTable, Quotas, ScopeMatch};
use crate::service::RateLimit;
use crate::store::Store;

/// The output tokens reserved for a request that sets no cap, before the scope has seen any
/// answer to average.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1_024;

/// Rate-limits requests and tokens per scope; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share one store (one set of limits), whatever it is.
#[derive(Clone, Debug)]
pub struct RateLimitLayer<St = MemoryStore> {
    pub(crate) store: St,
    pub(crate) config: Arc<Config>,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) max_wait: Duration,
    pub(crate) default_output_tokens: u64,
    pub(crate) header_sync: bool,
    pub(crate) learn: bool,
    pub(crate) per_model: bool,
}

impl RateLimitLayer<MemoryStore> {
    /// Limits every scope to `default`, in memory.
    pub fn new(default: Quotas) -> Self {
        Self::with_table(QuotaTable::new(default))
    }

    /// Limits each scope to its quotas from `table`, in memory.
    pub fn with_table(table: QuotaTable) -> Self {
        Self::from_store(MemoryStore::new(table))
    }

    /// Gives scopes that `matcher` matches their own `quotas`, in a fresh in-memory store.
    ///
    /// Prefer building a [`QuotaTable`] and [`with_table`](Self::with_table) for several.
    pub fn with_scope_quotas(self, matcher: ScopeMatch, quotas: Quotas) -> Self {
        let table = self.store.table().clone().with(matcher, quotas);
        Self {
            store: MemoryStore::new(table),
            config: self.config,
        }
    }

    /// A handle that reads the limits of every scope: quota, where it comes from, what remains
    /// and what requests in flight hold.
    pub fn handle(&self) -> RateLimitHandle {
        self.store.handle()
    }
}

impl<St: Store> RateLimitLayer<St> {
    /// A layer over `store` (a Redis store, or a [`MemoryStore`] shared with other layers).
    pub fn from_store(store: St) -> Self {
        Self {
            store,
            config: Arc::new(Config {
                max_wait: Duration::MAX,
                default_output_tokens: DEFAULT_OUTPUT_TOKENS,
                header_sync: true,
                learn: true,
                per_model: true,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The longest a request waits for capacity; beyond it, it fails at once with
    /// [`RateLimited`](tollgate_core::error::RateLimited) and the wait it would have had.
    /// Unbounded by default (callers queue, in arrival order). A [`MaxWait`](crate::MaxWait)
    /// or a [`Deadline`](tollgate_core::Deadline) in a request's extensions can shorten it.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.config_mut().max_wait = max_wait;
        self
    }

    /// The output tokens to reserve for a request without `max_tokens` before its scope has
    /// an average of its own (default [`DEFAULT_OUTPUT_TOKENS`]).
    pub fn with_default_output_tokens(mut self, tokens: u64) -> Self {
        self.config_mut().default_output_tokens = tokens;
        self
    }

    /// Whether the provider's rate-limit headers tighten the local limits (default: yes).
    pub fn with_header_sync(mut self, enabled: bool) -> Self {
        self.config_mut().header_sync = enabled;
        self
    }

    /// Whether a limit nobody configured is learned (default: yes): from the provider's
    /// rate-limit headers when it sends them, else as a pace from its 429s (see the crate
    /// docs, "Limits learned from refusals"). A header-reported quota replaces a learned pace.
    pub fn with_learning(mut self, enabled: bool) -> Self {
        self.config_mut().learn = enabled;
        self
    }

    /// Whether each model of a key has its own limits (the default: OpenAI, Anthropic and
    /// Gemini limit per model), or all the models of a key share them (a gateway or a
    /// self-hosted server that limits per key).
    pub fn with_per_model_limits(mut self, per_model: bool) -> Self {
        self.config_mut().per_model = per_model;
        self
    }

    /// The store, to inspect limits or share it with another layer.
    pub fn store(&self) -> &St {
        &self.store
    }
}

impl<S, St: Store> Layer<S> for RateLimitLayer<St> {
    type Service = RateLimit<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.store.clone(), self.config.clone())
    }
}
