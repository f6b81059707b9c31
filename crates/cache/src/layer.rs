use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;
use tollgate_core::error::ConfigError;
use tower::Layer;

use crate::config::CacheConfig;
use crate::flight::Flights;
use crate::handle::CacheHandle;
use crate::key::{CacheKey, DEFAULT_VARY, KeySource, Tenant};
use crate::policy::{CachePolicy, DefaultPolicy};
use crate::service::Cache;
use crate::store::Store;

/// The header that opts a request in (`force`) and marks hits (`hit`) and shared answers
/// (`coalesced`), unless the layer names another.
pub const DEFAULT_HEADER: &str = "x-tollgate-cache";

/// Caches deterministic LLM answers and coalesces identical calls; see the
/// [crate docs](crate).
///
/// # Clone
///
/// Clones, and every service they make, share one cache, one set of calls in flight and one
/// set of counters (a [`handle`](Self::handle) reaches them). A `with_*` setter changes only
/// the layer it is called on.
pub struct CacheLayer<P = DefaultPolicy> {
    pub(crate) core: Arc<Core>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) policy: Arc<P>,
}

/// What every clone shares.
pub(crate) struct Core {
    pub(crate) store: Store,
    pub(crate) flights: Arc<Flights>,
    pub(crate) config: CacheConfig,
    /// Whether a task follows the fleet's clears for this cache.
    #[cfg(feature = "redis")]
    pub(crate) following: std::sync::atomic::AtomicBool,
}

/// How one layer reads requests and marks responses.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) header: HeaderName,
    pub(crate) mark: bool,
    pub(crate) tenant: Option<Tenant>,
    pub(crate) vary: Vec<HeaderName>,
    #[cfg(feature = "redis")]
    pub(crate) second_level: Option<crate::redis::RedisStore>,
}

impl Settings {
    /// The header hits are marked with, if they are.
    pub(crate) fn marker(&self) -> Option<&HeaderName> {
        self.mark.then_some(&self.header)
    }

    /// The key of `request`, read with its extensions.
    pub(crate) fn key(&self, request: &Request<Full<Bytes>>) -> CacheKey {
        let body = tollgate_core::body::full_bytes(request.body().clone());
        let source = KeySource {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            body: &body,
        };
        source.key(self.tenant.as_ref(), &self.vary)
    }
}

impl CacheLayer {
    /// A cache bounded by `config`, with the [`DefaultPolicy`].
    ///
    /// # Errors
    ///
    /// An invalid configuration value.
    pub fn new(config: CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let store = Store::new(&config);
        let flights = Flights::new(store.max_entry_bytes(), store.counters.clone());
        Ok(Self {
            core: Arc::new(Core {
                store,
                flights: Arc::new(flights),
                config,
                #[cfg(feature = "redis")]
                following: std::sync::atomic::AtomicBool::new(false),
            }),
            settings: Arc::new(Settings {
                header: HeaderName::from_static(DEFAULT_HEADER),
                mark: true,
                tenant: None,
                vary: DEFAULT_VARY
                    .iter()
                    .map(|n| HeaderName::from_static(n))
                    .collect(),
                #[cfg(feature = "redis")]
                second_level: None,
            }),
            policy: Arc::new(DefaultPolicy),
        })
    }
}

impl Default for CacheLayer {
    /// A cache with [`CacheConfig::default`].
    fn default() -> Self {
        Self::new(CacheConfig::default()).expect("the default configuration is valid")
    }
}

impl<P> CacheLayer<P> {
    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Decides what is cacheable with `policy` (any `Fn(&Parts, &LlmRequest) -> bool`).
    pub fn with_policy<P2: CachePolicy>(self, policy: P2) -> CacheLayer<P2> {
        CacheLayer {
            core: self.core,
            settings: self.settings,
            policy: Arc::new(policy),
        }
    }

    /// Keys requests without a [`Tenant`] extension by `tenant` rather than by their
    /// credential.
    pub fn with_tenant(mut self, tenant: Tenant) -> Self {
        self.settings_mut().tenant = Some(tenant);
        self
    }

    /// Reads the opt-in and marks answers with `name` instead of `x-tollgate-cache`.
    pub fn with_header_name(mut self, name: HeaderName) -> Self {
        self.settings_mut().header = name;
        self
    }

    /// Whether hits and coalesced answers carry the header (they do by default); the
    /// [`CacheStatus`](crate::CacheStatus) extension is there either way.
    pub fn with_marking(mut self, mark: bool) -> Self {
        self.settings_mut().mark = mark;
        self
    }

    /// Counts the values of `names` in the key instead of the default vary headers
    /// (`anthropic-version`, `anthropic-beta`, `openai-organization`, `openai-project`,
    /// `openai-beta`).
    pub fn with_vary_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings_mut().vary = names.into_iter().collect();
        self
    }

    /// Shares answers with the rest of a fleet through `store`: a request that misses in
    /// memory is looked up there before it goes upstream, and every answer stored in memory
    /// is stored there too. A task on the runtime the store connected on follows the fleet's
    /// [clears](CacheHandle::clear_everywhere) until the cache is dropped.
    #[cfg(feature = "redis")]
    pub fn with_second_level(mut self, store: crate::redis::RedisStore) -> Self {
        if !self
            .core
            .following
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            store.follow_clears(Arc::downgrade(&self.core));
        }
        self.settings_mut().second_level = Some(store);
        self
    }

    /// A handle to read the counters, to invalidate entries and to
    /// [look up stale answers](CacheHandle::stale_lookup). It reads requests as this layer does
    /// now: take it after the `with_*` setters.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            core: self.core.clone(),
            settings: self.settings.clone(),
        }
    }

    /// The key this layer files `request` under (to [invalidate](CacheHandle::invalidate)
    /// it, say). The request is read as the layer would read it: with its
    /// [`LlmRequest`](tollgate_core::LlmRequest) and [`Tenant`] extensions.
    pub fn key(&self, request: &Request<Full<Bytes>>) -> CacheKey {
        self.settings.key(request)
    }
}

impl<P> Clone for CacheLayer<P> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            settings: self.settings.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<P> fmt::Debug for CacheLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.core.config)
            .field("settings", &self.settings)
            .field("policy", &std::any::type_name::<P>())
            .finish()
    }
}

impl<S, P> Layer<S> for CacheLayer<P> {
    type Service = Cache<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.clone())
    }
}
