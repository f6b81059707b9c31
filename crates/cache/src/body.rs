//! [`CacheBody`]: the body of every response through the cache.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tollgate_core::BoxError;

use crate::entry::Entry;
use crate::flight::Waiter;

pin_project! {
    /// A stored body replayed frame by frame (a stream streams again, event by event), the
    /// body of a call in flight read as it arrives, or the inner body untouched.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Pass { #[pin] inner: B },
        Stored { entry: Arc<Entry>, next: usize, trailers_sent: bool },
        Shared { waiter: Waiter },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn pass(inner: B) -> Self {
        Self {
            kind: Kind::Pass { inner },
        }
    }

    pub(crate) fn stored(entry: Arc<Entry>) -> Self {
        Self {
            kind: Kind::Stored {
                entry,
                next: 0,
                trailers_sent: false,
            },
        }
    }

    pub(crate) fn shared(waiter: Waiter) -> Self {
        Self {
            kind: Kind::Shared { waiter },
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Pass { inner } => inner
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            KindProj::Stored {
                entry,
                next,
                trailers_sent,
            } => {
                if let Some(data) = entry.frames.get(*next) {
                    *next += 1;
                    return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
                }
                if std::mem::replace(trailers_sent, true) {
                    return Poll::Ready(None);
                }
                Poll::Ready(entry.trailers.clone().map(|t| Ok(Frame::trailers(t))))
            }
            KindProj::Shared { waiter } => waiter.flight.poll_frame(waiter.id, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Pass { inner } => inner.is_end_stream(),
            Kind::Stored {
                entry,
                next,
                trailers_sent,
            } => *next >= entry.frames.len() && (*trailers_sent || entry.trailers.is_none()),
            Kind::Shared { waiter } => waiter.flight.is_end(waiter.id),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Pass { inner } => inner.size_hint(),
            Kind::Stored { entry, next, .. } => {
                let rest = entry.frames.get(*next..).unwrap_or_default();
                SizeHint::with_exact(rest.iter().map(|f| f.len() as u64).sum())
            }
            Kind::Shared { .. } => SizeHint::default(),
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Pass { .. } => "pass",
            Kind::Stored { .. } => "stored",
            Kind::Shared { .. } => "shared",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}
