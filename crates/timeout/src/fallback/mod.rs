//! Graceful degradation: answer from a fallback service when the upstream is unavailable.

pub(crate) mod future;
mod policy;
mod trigger;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request, Response};
use http_body_util::Either;
use tollgate_core::BoxError;
use tower::{Layer, Service};

use self::future::FallbackFuture;
pub use self::policy::{FallbackPolicy, Triggers};
pub use self::trigger::{Degraded, Trigger};

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
/// use tollgate_timeout::FallbackLayer;
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
        Fallback {
            inner,
            shared: Arc::new(Shared {
                fallback: self.fallback.clone(),
                policy: self.policy.clone(),
                header: self.header.clone(),
            }),
        }
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

/// The service made by [`FallbackLayer`].
///
/// Readiness is the inner service's. Each call keeps a clone of its request (the body of an
/// annotated request is `Bytes`, so the prompt is shared, not copied) to hand to the fallback
/// if the upstream fails.
///
/// The response body is an [`Either`]: `Left` the upstream's, `Right` the fallback's. No box,
/// so no allocation on the happy path and nothing lost of either body (`Send`, `Sync`,
/// `Unpin`, size hints); callers that want one type erase it once at the top of their stack.
#[derive(Clone)]
pub struct Fallback<S, F, P = Triggers> {
    inner: S,
    // Shared by every call, so that the happy path clones an `Arc`, not the fallback service.
    shared: Arc<Shared<F, P>>,
}

/// What a call that falls back needs.
pub(crate) struct Shared<F, P> {
    pub(crate) fallback: F,
    pub(crate) policy: P,
    pub(crate) header: Option<HeaderName>,
}

impl<S, F, P> Fallback<S, F, P> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, F, P, B, PB, FB> Service<Request<B>> for Fallback<S, F, P>
where
    S: Service<Request<B>, Response = Response<PB>>,
    S::Error: Into<BoxError>,
    F: Service<Request<B>, Response = Response<FB>> + Clone,
    F::Error: Into<BoxError>,
    P: FallbackPolicy,
    B: Clone,
{
    type Response = Response<Either<PB, FB>>;
    type Error = BoxError;
    type Future = FallbackFuture<S::Future, F, B, PB, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let spare = request.clone();
        FallbackFuture::new(self.inner.call(request), spare, self.shared.clone())
    }
}

impl<S: fmt::Debug, F, P: fmt::Debug> fmt::Debug for Fallback<S, F, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("fallback", &std::any::type_name::<F>())
            .field("policy", &self.shared.policy)
            .field("header", &self.shared.header)
            .finish()
    }
}
