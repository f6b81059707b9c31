//! The response future of [`Classify`](super::Classify).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::Response;
use http::response::Parts;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::body::{EndOfStream, ObservedBody, PeekStop};
use crate::classify::classify_response;
use crate::metrics::CallMetrics;
use crate::{BoxError, Clock, OutcomeKind, Provider, RateLimitSnapshot};

pin_project! {
    /// Waits for the response, peeks at an error body, and classifies.
    pub struct ClassifyFuture<F, RB, C> {
        #[pin]
        state: State<F, RB>,
        provider: Option<Provider>,
        sent_at: Instant,
        clock: C,
        peek_limit: usize,
        metrics: CallMetrics,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, RB> {
        Calling {
            #[pin]
            future: F,
        },
        Peeking {
            parts: Option<Parts>,
            body: Option<Pin<Box<RB>>>,
            buffer: BytesMut,
        },
    }
}

impl<F, RB, C> ClassifyFuture<F, RB, C> {
    pub(super) fn new(
        future: F,
        provider: Option<Provider>,
        sent_at: Instant,
        clock: C,
        peek_limit: usize,
        metrics: CallMetrics,
    ) -> Self {
        Self {
            state: State::Calling { future },
            provider,
            sent_at,
            clock,
            peek_limit,
            metrics,
        }
    }
}

impl<F, RB, C, E> Future for ClassifyFuture<F, RB, C>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
    C: Clock,
{
    type Output = Result<Response<ObservedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let (parts, body) = match ready!(future.poll(cx)) {
                        Ok(response) => response.into_parts(),
                        Err(error) => {
                            let (clock, sent_at) = (&*this.clock, *this.sent_at);
                            this.metrics
                                .transport_error(|| clock.now().saturating_duration_since(sent_at));
                            return Poll::Ready(Err(error));
                        }
                    };
                    if parts.status.is_success() || *this.peek_limit == 0 {
                        let (body, end) = ObservedBody::new(body, &parts.headers);
                        let mut response =
                            finish(parts, &[], body, this.provider, this.sent_at, this.clock);
                        record(this.metrics, &response, &end, *this.sent_at, this.clock);
                        response.extensions_mut().insert(end);
                        return Poll::Ready(Ok(response));
                    }
                    this.state.set(State::Peeking {
                        parts: Some(parts),
                        body: Some(Box::pin(body)),
                        buffer: BytesMut::new(),
                    });
                }
                StateProj::Peeking {
                    parts,
                    body,
                    buffer,
                } => {
                    let stop = {
                        let reading = body.as_mut().expect("polled after completion");
                        ready!(peek(reading.as_mut(), buffer, *this.peek_limit, cx))
                    };
                    let parts = parts.take().expect("polled after completion");
                    let reading = body.take().expect("polled after completion");
                    let prefix = std::mem::take(buffer).freeze();
                    let (observed, end) =
                        ObservedBody::peeked(reading, prefix.clone(), stop, &parts.headers);
                    let mut response = finish(
                        parts,
                        &prefix,
                        observed,
                        this.provider,
                        this.sent_at,
                        this.clock,
                    );
                    record(this.metrics, &response, &end, *this.sent_at, this.clock);
                    response.extensions_mut().insert(end);
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// Reads frames into `buffer` until it holds `limit` bytes or the body ends. Returns a
/// trailers frame or error met on the way, and whether the body ended.
fn peek<RB>(
    mut body: Pin<&mut RB>,
    buffer: &mut BytesMut,
    limit: usize,
    cx: &mut Context<'_>,
) -> Poll<PeekStop>
where
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    while buffer.len() < limit {
        match ready!(body.as_mut().poll_frame(cx)) {
            None => {
                return Poll::Ready(PeekStop {
                    rest: None,
                    body_done: true,
                });
            }
            Some(Err(error)) => {
                let rest = Some(Err(error.into()));
                return Poll::Ready(PeekStop {
                    rest,
                    body_done: true,
                });
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buffer.extend_from_slice(&data);
                    if body.is_end_stream() {
                        return Poll::Ready(PeekStop {
                            rest: None,
                            body_done: true,
                        });
                    }
                }
                Err(trailers) => {
                    let rest = Some(Ok(trailers));
                    return Poll::Ready(PeekStop {
                        rest,
                        body_done: true,
                    });
                }
            },
        }
    }
    Poll::Ready(PeekStop {
        rest: None,
        body_done: false,
    })
}

fn finish<B, C: Clock>(
    parts: Parts,
    peeked: &[u8],
    body: B,
    provider: &Option<Provider>,
    sent_at: &Instant,
    clock: &C,
) -> Response<B> {
    let now = clock.wall();
    let outcome = classify_response(parts.status, &parts.headers, peeked, now);
    let mut snapshot = RateLimitSnapshot::from_headers(&parts.headers, *provider, now);
    snapshot.sent_at = Some(*sent_at);
    tracing::trace!(outcome = %outcome, "classified response");
    let mut response = Response::from_parts(parts, body);
    response.extensions_mut().insert(outcome);
    response.extensions_mut().insert(snapshot);
    response
}

/// Times the call to its head; counts a failure now and a success when its body ends.
fn record<B, C: Clock>(
    metrics: &CallMetrics,
    response: &Response<B>,
    end: &EndOfStream,
    sent_at: Instant,
    clock: &C,
) {
    if let Some(outcome) = response.extensions().get::<crate::Outcome>() {
        let elapsed = || clock.now().saturating_duration_since(sent_at);
        match outcome.kind {
            OutcomeKind::Success => metrics.success_head(elapsed, end),
            kind => metrics.response(kind, elapsed),
        }
    }
}

impl<F, RB, C> fmt::Debug for ClassifyFuture<F, RB, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFuture")
            .field("provider", &self.provider)
            .field("sent_at", &self.sent_at)
            .finish_non_exhaustive()
    }
}
