//! The response future of [`Cache`](crate::Cache).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tollgate_core::BoxError;
use tower::Service;
use tower::util::Oneshot;

use crate::body::CacheBody;
use crate::entry::Entry;
use crate::flight::Waiter;
use crate::status::CacheStatus;

pin_project! {
    /// A stored answer (ready at once), the answer of a call in flight, or the inner service's
    /// own for a request the cache lets through.
    pub struct ResponseFuture<S, RB>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        kind: Kind<S>,
        _body: PhantomData<fn() -> RB>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        Hit { entry: Option<Arc<Entry>> },
        Waiting { waiter: Option<Waiter>, marker: Option<HeaderName> },
        Bypass { #[pin] call: Oneshot<S, Request<Full<Bytes>>> },
    }
}

impl<S, RB> ResponseFuture<S, RB>
where
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn hit(entry: Arc<Entry>) -> Self {
        Self::of(Kind::Hit { entry: Some(entry) })
    }

    pub(crate) fn waiting(waiter: Waiter, marker: Option<HeaderName>) -> Self {
        Self::of(Kind::Waiting {
            waiter: Some(waiter),
            marker,
        })
    }

    pub(crate) fn bypass(call: Oneshot<S, Request<Full<Bytes>>>) -> Self {
        Self::of(Kind::Bypass { call })
    }

    fn of(kind: Kind<S>) -> Self {
        Self {
            kind,
            _body: PhantomData,
        }
    }
}

impl<S, RB> Future for ResponseFuture<S, RB>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<CacheBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Hit { entry } => {
                let entry = entry.take().expect("polled after completion");
                let mut response = Response::new(());
                *response.status_mut() = entry.status;
                *response.headers_mut() = entry.headers.clone();
                response.extensions_mut().insert(CacheStatus::Hit);
                Poll::Ready(Ok(response.map(|()| CacheBody::stored(entry))))
            }
            KindProj::Waiting { waiter, marker } => {
                let w = waiter.as_ref().expect("polled after completion");
                let polled = ready!(w.flight.poll_head(w.id, cx));
                let waiter = waiter.take().expect("polled after completion");
                let (mut head, from_second_level) = polled?;
                let status = match (waiter.leader, from_second_level) {
                    (true, true) => CacheStatus::Hit,
                    (true, false) => CacheStatus::Miss,
                    (false, _) => CacheStatus::Coalesced,
                };
                if let Some(marker) = marker.take()
                    && status != CacheStatus::Miss
                {
                    head.headers
                        .insert(marker, HeaderValue::from_static(status.as_str()));
                }
                head.extensions.insert(status);
                Poll::Ready(Ok(Response::from_parts(head, CacheBody::shared(waiter))))
            }
            KindProj::Bypass { call } => {
                let mut response = ready!(call.poll(cx)).map_err(Into::into)?;
                response.extensions_mut().insert(CacheStatus::Bypass);
                Poll::Ready(Ok(response.map(CacheBody::pass)))
            }
        }
    }
}

impl<S, RB> fmt::Debug for ResponseFuture<S, RB>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
