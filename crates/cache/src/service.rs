use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tokio::time::Instant;
use tollgate_core::{BoxError, LlmRequest};
use tower::Service;
use tower::util::Oneshot;

use crate::body::CacheBody;
use crate::call::Call;
use crate::entry::Entry;
use crate::flight::{Flight, Waiter, WaiterId};
use crate::future::ResponseFuture;
use crate::key::{CacheKey, KeySource};
use crate::layer::{CacheLayer, Core, Settings};
use crate::policy::{CachePolicy, Directive};
use crate::stats::bump;
use crate::store::Lookup;

/// The service made by [`CacheLayer`].
///
/// It is always ready: a hit is answered in `call`, and the inner service's readiness is
/// awaited only by the requests that go to it, each on a clone of it — so a busy upstream
/// never holds back a hit. A miss makes its call in a task of its own (see the
/// [crate docs](crate)), so `call` must run inside a tokio runtime.
pub struct Cache<S, P> {
    inner: S,
    core: Arc<Core>,
    settings: Arc<Settings>,
    policy: Arc<P>,
}

impl<S, P> Cache<S, P> {
    pub(crate) fn new(inner: S, layer: CacheLayer<P>) -> Self {
        Self {
            inner,
            core: layer.core,
            settings: layer.settings,
            policy: layer.policy,
        }
    }

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

impl<S: Clone, P> Clone for Cache<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: self.core.clone(),
            settings: self.settings.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Cache<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("config", &self.core.config)
            .field("settings", &self.settings)
            .field("policy", &std::any::type_name::<P>())
            .finish()
    }
}

impl<S, P, RB> Service<Request<Full<Bytes>>> for Cache<S, P>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    P: CachePolicy,
{
    type Response = Response<CacheBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, RB>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Full<Bytes>>) -> Self::Future {
        let settings = &*self.settings;
        let directive = Directive::of(request.headers(), &settings.header);
        // The opt-in is for this layer, not for the provider.
        request.headers_mut().remove(&settings.header);
        let (parts, body) = request.into_parts();
        let llm = parts.extensions.get::<LlmRequest>();
        let cacheable = !directive.no_store
            && (directive.force || llm.is_some_and(|llm| self.policy.is_cacheable(&parts, llm)));
        if !cacheable {
            bump(&self.core.store.counters.bypasses);
            let request = Request::from_parts(parts, body);
            return ResponseFuture::bypass(Oneshot::new(self.inner.clone(), request));
        }
        let streamed = llm.is_some_and(|llm| llm.stream);
        let body = tollgate_core::body::full_bytes(body);
        let key = KeySource {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
            body: &body,
        }
        .key(settings.tenant.as_ref(), &settings.vary);
        let store = &self.core.store;
        if !directive.no_cache {
            match store.get(&key, Instant::now()) {
                Lookup::Fresh(entry) => {
                    bump(&store.counters.hits);
                    return ResponseFuture::hit(entry);
                }
                Lookup::Expired => bump(&store.counters.expirations),
                Lookup::Absent => {}
            }
        }
        let request = Request::from_parts(parts, Full::new(body));
        let call = Call {
            key,
            streamed,
            refresh: directive.no_cache,
        };
        let marker = self.settings.marker().cloned();
        let (flight, leader) = match self.join_or_lead(&call) {
            Route::Joined(waiter) => return ResponseFuture::waiting(waiter, marker),
            Route::Stored(entry) => return ResponseFuture::hit(entry),
            Route::Lead(flight, leader) => (flight, leader),
        };
        let core = &self.core;
        bump(&core.store.counters.misses);
        let waiter = Waiter::new(flight.clone(), leader, true, key, core.flights.clone());
        let settings = self.settings.clone();
        let task = call.spawn(
            flight.clone(),
            core.clone(),
            settings,
            self.inner.clone(),
            request,
        );
        flight.set_task(task);
        ResponseFuture::waiting(waiter, marker)
    }
}

/// Where a miss goes.
enum Route {
    /// An identical call in flight took it in, as this waiter.
    Joined(Waiter),
    /// The answer was stored meanwhile.
    Stored(Arc<Entry>),
    /// It starts a call, as this waiter of this flight.
    Lead(Arc<Flight>, WaiterId),
}

impl<S, P> Cache<S, P> {
    /// Joins the identical call in flight, or sets up a flight to lead.
    fn join_or_lead(&self, call: &Call) -> Route {
        let core = &self.core;
        let lead = || {
            let flight = core.flights.start();
            let leader = flight.join().expect("a new flight takes its first waiter");
            Route::Lead(flight, leader)
        };
        if !core.config.coalesce || call.refresh {
            return lead();
        }
        let counters = &core.store.counters;
        let mut flights = core.flights.lock();
        if let Some(joined) = join(flights.get(&call.key), call.key, core) {
            drop(flights);
            bump(&counters.coalesced);
            return Route::Joined(joined);
        }
        // A flight stores its answer before it leaves the map: look again under the lock.
        if let Lookup::Fresh(entry) = core.store.get(&call.key, Instant::now()) {
            drop(flights);
            bump(&counters.hits);
            return Route::Stored(entry);
        }
        let route = lead();
        if let Route::Lead(flight, _) = &route {
            flights.insert(call.key, flight.clone());
        }
        route
    }
}

/// A waiter on `flight`, if there is one and it still takes waiters.
fn join(flight: Option<&Arc<Flight>>, key: CacheKey, core: &Core) -> Option<Waiter> {
    let flight = flight?;
    let id = flight.join()?;
    Some(Waiter::new(
        flight.clone(),
        id,
        false,
        key,
        core.flights.clone(),
    ))
}
