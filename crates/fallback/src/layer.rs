//! [`FallbackLayer`]: the fallback service, the policy and the header, as configuration.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use tower::Layer;

use crate::policy::{FallbackPolicy, Triggers};
use crate::service::{Fallback, Shared};
#[cfg(doc)]
use crate::trigger::{Degraded, Trigger};

/// The header a degraded answer carries by default, with its [`Trigger`] as the value
/// (`x-tollgate-degraded: circuit_open`).
pub const DEGRADED_HEADER: HeaderName = HeaderName::from_static("x-tollgate-degraded");

/// Answers a call from a fallback service when the upstream fails in a way the policy names;
/// see the [crate docs](crate).
///
/// The fallback is any `Service` that takes the same requests — a local model, a rules or regex
/// extractor, a canned answer, a stale cache entry. It is cloned only for a call that falls
/// back, and driven to readiness then: a fallback costs nothing while the upstream is well.
/// When the fallback fails too (a stale cache with nothing to offer, say), the caller gets the
/// upstream's failure, as without the layer.
///
/// # Stale on error
///
/// `tollgate-cache`'s `CacheHandle::stale_lookup` is such a fallback: put this layer above the
/// `CacheLayer`, and a request whose upstream call fails with one of the policy's triggers is
/// answered from its cached entry even past the entry's time to live (up to the cache's
/// `max_staleness`), marked `x-tollgate-cache: stale` with an `age` header as well as
/// [`Degraded`]. With no entry, or one too old, the lookup fails (`NotCached`) and the caller
/// gets the upstream's failure unchanged; with the default [`Triggers`], an exhausted quota,
/// a refused key or an invalid request is never answered stale.
///
/// ```
/// use std::time::Duration;
///
/// use tollgate_cache::{CacheConfig, CacheLayer};
/// use tollgate_core::annotate::AnnotateLayer;
/// use tollgate_core::classify::ClassifyLayer;
/// use tollgate_fallback::FallbackLayer;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), tollgate_core::BoxError> {
/// # let client = tollgate_sim::SimService::new(Default::default())?;
/// let cache = CacheLayer::new(CacheConfig {
///     time_to_live: Duration::from_secs(60),
///     max_staleness: Duration::from_secs(600),
///     ..CacheConfig::default()
/// })?;
/// let llm = ServiceBuilder::new()
///     .layer(AnnotateLayer::new())
///     .layer(FallbackLayer::new(cache.handle().stale_lookup()))
///     .layer(cache)
///     .layer(ClassifyLayer::new())
///     .service(client);
/// # drop(llm);
/// # Ok(()) }
/// ```
///
/// # Clone
///
/// Clones hold clones of the fallback service (which may share state of its own).
#[derive(Clone)]
pub struct FallbackLayer<F, P = Triggers> {
    fallback: F,
    policy: P,
    header: Option<HeaderName>,
}

impl<F> FallbackLayer<F> {
    /// Falls back to `fallback` on the [default triggers](Triggers::default), and marks its
    /// answers with the [`DEGRADED_HEADER`].
    pub const fn new(fallback: F) -> Self {
        Self {
            fallback,
            policy: Triggers::standard(),
            header: Some(DEGRADED_HEADER),
        }
    }
}

impl<F, P> FallbackLayer<F, P> {
    /// Decides when to fall back with `policy` ([`Triggers`] or a closure) instead.
    pub fn with_policy<P2: FallbackPolicy>(self, policy: P2) -> FallbackLayer<F, P2> {
        FallbackLayer {
            fallback: self.fallback,
            policy,
            header: self.header,
        }
    }

    /// Marks degraded answers with the header `name` instead.
    pub fn with_header(mut self, name: HeaderName) -> Self {
        self.header = Some(name);
        self
    }

    /// Marks degraded answers with the [`Degraded`] extension only, no header.
    pub fn without_header(mut self) -> Self {
        self.header = None;
        self
    }
}

impl<S, F: Clone, P: Clone> Layer<S> for FallbackLayer<F, P> {
    type Service = Fallback<S, F, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(
            inner,
            Arc::new(Shared {
                fallback: self.fallback.clone(),
                policy: self.policy.clone(),
                header: self.header.clone(),
            }),
        )
    }
}

impl<F, P: fmt::Debug> fmt::Debug for FallbackLayer<F, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("fallback", &std::any::type_name::<F>())
            .field("policy", &self.policy)
            .field("header", &self.header)
            .finish()
    }
}
