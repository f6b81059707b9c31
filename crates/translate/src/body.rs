//! [`TranslatedBody`]: an answer's body in the client's format: whole, or a stream translated
//! frame by frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::stream::StreamTranslator;

pin_project! {
    /// An answer's body in the client's format.
    #[derive(Debug)]
    pub struct TranslatedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = Projection]
    #[derive(Debug)]
    enum Kind<B> {
        // Translated whole: an answer or an error.
        Whole {
            data: Option<Bytes>,
        },
        // A stream, translated as its frames arrive.
        Stream {
            #[pin]
            inner: B,
            translator: Box<StreamTranslator>,
            ended: bool,
        },
    }
}

impl<B> TranslatedBody<B> {
    pub(crate) fn whole(data: Bytes) -> Self {
        Self {
            kind: Kind::Whole { data: Some(data) },
        }
    }

    pub(crate) fn stream(inner: B, translator: StreamTranslator) -> Self {
        Self {
            kind: Kind::Stream {
                inner,
                translator: Box::new(translator),
                ended: false,
            },
        }
    }
}

impl<B> Body for TranslatedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            Projection::Whole { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Projection::Stream {
                mut inner,
                translator,
                ended,
            } => loop {
                if *ended {
                    return Poll::Ready(None);
                }
                match inner.as_mut().poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers have no counterpart in the client's events.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        let out = translator.feed(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Poll::Ready(None) => {
                        *ended = true;
                        let out = translator.finish();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole { data } => data.is_none(),
            Kind::Stream { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}
