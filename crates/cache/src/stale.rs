//! [`StaleLookup`]: an answer from the cache when the upstream is unavailable.
//!
//! # Why a lookup, and not a flag on the layer
//!
//! Whether the upstream is unavailable is decided above the cache — by a fallback layer that
//! reads the outcome, after the retries and the breaker have had their say — and which
//! failures may be answered with an old answer is that layer's policy (an exhausted quota or a
//! refused key must reach the caller). So the cache only offers the lookup: a service that
//! answers from memory or fails with [`NotCached`], and never calls upstream.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{Empty, Full};
use tokio::time::Instant;
use tollgate_core::BoxError;
use tower::Service;

use crate::body::CacheBody;
use crate::error::NotCached;
use crate::layer::{Core, Settings};
use crate::policy::Directive;
use crate::stats::bump;
use crate::status::CacheStatus;

/// The body of a stale answer: a [`CacheBody`] replaying the stored one (its type parameter,
/// the body of requests a cache lets through, is never used here).
pub type StaleBody = CacheBody<Empty<Bytes>>;

/// Answers a request from the entry its [`CacheLayer`](crate::CacheLayer) stored, even past
/// its time to live (up to `max_staleness`), for a fallback layer to call when the upstream is
/// unavailable; from [`CacheHandle::stale_lookup`](crate::CacheHandle::stale_lookup).
///
/// It files the request under the key the layer would (the same endpoint, model, credential
/// or [`Tenant`](crate::Tenant), vary headers and canonical body: hand it the request with the
/// extensions `AnnotateLayer` gave it). A hit replays the stored answer as a normal hit does —
/// a stream streams its events again — marked `x-tollgate-cache: stale` (the layer's header,
/// unless it marks nothing), with an `age` header in seconds and a
/// [`CacheStatus::Stale`] extension, and counts in
/// [`CacheStats::stale_hits`](crate::CacheStats::stale_hits). It fails with [`NotCached`]
/// when there is no entry, when the entry is too stale, or when the request says
/// `cache-control: no-store`. It never calls upstream nor joins a call in flight, and it
/// looks in memory only, not in the second level.
///
/// It is always ready, and answers within `call`.
///
/// # Clone
///
/// Clones read the same cache.
#[derive(Clone)]
pub struct StaleLookup {
    core: Arc<Core>,
    settings: Arc<Settings>,
    max_staleness: Duration,
}

impl StaleLookup {
    pub(crate) fn new(core: Arc<Core>, settings: Arc<Settings>) -> Self {
        let max_staleness = core.store.max_staleness();
        Self {
            core,
            settings,
            max_staleness,
        }
    }

    /// Serves entries at most `max_staleness` past their time to live, rather than the
    /// cache's [`max_staleness`](crate::CacheConfig::max_staleness) (it cannot serve more:
    /// older entries are gone).
    pub fn with_max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    fn answer(&self, request: &Request<Full<Bytes>>) -> Result<Response<StaleBody>, NotCached> {
        let settings = &*self.settings;
        if Directive::of(request.headers(), &settings.header).no_store {
            return Err(NotCached);
        }
        let key = settings.key(request);
        let store = &self.core.store;
        let (entry, age) = store
            .get_stale(&key, Instant::now(), self.max_staleness)
            .ok_or(NotCached)?;
        bump(&store.counters.stale_hits);
        let status = CacheStatus::Stale { age };
        let mut response = Response::new(());
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        if let Some(marker) = settings.marker() {
            let value = HeaderValue::from_static(status.as_str());
            response.headers_mut().insert(marker.clone(), value);
        }
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age.as_secs()));
        response.extensions_mut().insert(status);
        Ok(response.map(|()| CacheBody::stored(entry)))
    }
}

impl Service<Request<Full<Bytes>>> for StaleLookup {
    type Response = Response<StaleBody>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<StaleBody>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let answer = self.answer(&request);
        if answer.is_err() {
            tracing::debug!("no stale answer to serve");
        }
        std::future::ready(answer.map_err(Into::into))
    }
}

impl fmt::Debug for StaleLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleLookup")
            .field("max_staleness", &self.max_staleness)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::{CacheConfig, CacheLayer};

    fn ask(extra: Option<(&str, &str)>) -> Request<Full<Bytes>> {
        let mut request = Request::post("https://api.openai.com/v1/embeddings")
            .header("authorization", "Bearer sk-a");
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        request
            .body(Full::new(Bytes::from_static(
                br#"{"model":"text-embedding-3-small","input":"hi"}"#,
            )))
            .unwrap()
    }

    fn not_cached(error: &BoxError) -> bool {
        error.downcast_ref::<NotCached>() == Some(&NotCached)
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_stored_is_not_cached() {
        let layer = CacheLayer::new(CacheConfig {
            max_staleness: Duration::from_secs(600),
            ..CacheConfig::default()
        })
        .unwrap();
        let mut lookup = layer.handle().stale_lookup();
        let error = lookup.call(ask(None)).await.unwrap_err();
        assert!(not_cached(&error), "{error}");
        assert!(error.source().is_none());
        assert_eq!(
            error.to_string(),
            "no cached answer to serve in place of the upstream's"
        );
        assert_eq!(layer.handle().snapshot().stale_hits, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stored_answer_is_served_stale_within_bounds_only() {
        use crate::entry::{Entry, Recorded};
        let layer = CacheLayer::new(CacheConfig {
            time_to_live: Duration::from_secs(60),
            max_staleness: Duration::from_secs(600),
            ..CacheConfig::default()
        })
        .unwrap();
        let handle = layer.handle();
        let now = Instant::now();
        let recorded = Recorded {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            frames: vec![Bytes::from_static(b"{}")],
            trailers: None,
            streamed: false,
        };
        let marker = layer.settings.marker();
        let entry = Arc::new(Entry::new(recorded, now, now, marker));
        layer.core.store.insert(layer.key(&ask(None)), entry);

        tokio::time::advance(Duration::from_secs(90)).await;
        let mut lookup = handle.stale_lookup();
        let response = lookup.call(ask(None)).await.unwrap();
        let age = Duration::from_secs(90);
        assert_eq!(
            response.extensions().get(),
            Some(&CacheStatus::Stale { age })
        );
        assert_eq!(response.headers()["x-tollgate-cache"], "stale");
        assert_eq!(response.headers()[header::AGE], "90");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{}");
        assert_eq!(handle.snapshot().stale_hits, 1);

        let no_store = ask(Some(("cache-control", "no-store")));
        assert!(not_cached(&lookup.call(no_store).await.unwrap_err()));
        let mut stricter = handle
            .stale_lookup()
            .with_max_staleness(Duration::from_secs(20));
        assert!(not_cached(&stricter.call(ask(None)).await.unwrap_err()));

        tokio::time::advance(Duration::from_secs(570)).await;
        assert!(
            not_cached(&lookup.call(ask(None)).await.unwrap_err()),
            "660 s: too stale"
        );
        assert_eq!(handle.snapshot().stale_hits, 1);
    }
}
