//! The response body of [`Timeout`](crate::Timeout): the idle and total limits, chunk by chunk.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tollgate_core::body::EndOfStream;
use tollgate_core::{BoxError, Outcome, OutcomeKind};

use crate::error::{FirstByteTimeout, IdleTimeout, Limit, TotalTimeout};
use crate::metrics::TimeoutLabels;
use crate::plan::Plan;

pin_project! {
    #[project = StateProj]
    enum State<B> {
        Reading { #[pin] body: B },
        // Ended: read to its end, failed, or given up on (and dropped at once, so that the
        // connection and every permit the body holds are released then, not when the caller
        // gets round to dropping this one).
        Done,
    }
}

pin_project! {
    /// A response body that ends with an [`IdleTimeout`] when it goes silent, a
    /// [`TotalTimeout`] when the attempt runs out of time (or its request's deadline passes),
    /// or a [`FirstByteTimeout`] when a stream's first data does not come.
    ///
    /// The frames pass through unchanged. When it gives up, the inner body is dropped; if the
    /// response carried an [`EndOfStream`] (a `ClassifyLayer` below), its hooks see a stream
    /// that [failed](tollgate_core::body::EndReason::Failed) with a
    /// [`Timeout`](OutcomeKind::Timeout) — so the breaker, the limiter and the adaptive limit
    /// count it — and a body observer above sees the error itself, which classifies the same.
    /// The request's own [`Deadline`](tollgate_core::Deadline) is the exception: the caller
    /// gave up, not the upstream, so the hooks see a [dropped](tollgate_core::body::EndReason::Dropped)
    /// stream (the error the caller reads is still a [`TotalTimeout`]).
    pub struct TimeoutBody<B> {
        #[pin]
        state: State<B>,
        sleep: Option<Pin<Box<Sleep>>>,
        plan: Plan,
        // The limit the running timer stands for; `None`: no timer running.
        armed: Option<Limit>,
        // The timer is set when the caller asks for the next frame, not when one is handed
        // over: time the caller spends between reads is not the upstream's silence.
        rearm: bool,
        // No data yet: the time to first byte still applies.
        first: bool,
        asked_at: Instant,
        bytes: u64,
        end: Option<EndOfStream>,
        labels: TimeoutLabels,
    }
}

impl<B> TimeoutBody<B> {
    pub(crate) fn new(
        body: B,
        sleep: Option<Pin<Box<Sleep>>>,
        plan: Plan,
        end: Option<EndOfStream>,
        labels: TimeoutLabels,
    ) -> Self {
        Self {
            state: State::Reading { body },
            sleep,
            plan,
            armed: None,
            rearm: true,
            first: true,
            asked_at: plan.start,
            bytes: 0,
            end,
            labels,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let StateProj::Reading { body } = this.state.as_mut().project() else {
            return Poll::Ready(None);
        };
        if *this.rearm {
            *this.rearm = false;
            let now = Instant::now();
            *this.asked_at = now;
            *this.armed = this.plan.next_frame(now, *this.first).map(|(due, limit)| {
                match this.sleep {
                    Some(sleep) => sleep.as_mut().reset(due),
                    None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(due))),
                }
                limit
            });
        }
        // A frame that is ready when the clock runs out still counts.
        if let Poll::Ready(frame) = body.poll_frame(cx) {
            return Poll::Ready(match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        *this.first = false;
                        *this.bytes += bytes::Buf::remaining(data) as u64;
                    }
                    *this.rearm = true;
                    Some(Ok(frame))
                }
                Some(Err(error)) => {
                    this.state.set(State::Done);
                    Some(Err(error.into()))
                }
                None => {
                    this.state.set(State::Done);
                    None
                }
            });
        }
        let (Some(limit), Some(sleep)) = (*this.armed, this.sleep.as_mut()) else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        let bytes = *this.bytes;
        let error: BoxError = match limit {
            Limit::FirstByte => Box::new(FirstByteTimeout {
                waited: now.saturating_duration_since(this.plan.start),
                limit,
            }),
            Limit::Idle => Box::new(IdleTimeout {
                idle: now.saturating_duration_since(*this.asked_at),
                bytes,
            }),
            Limit::Total | Limit::Deadline => Box::new(TotalTimeout {
                elapsed: now.saturating_duration_since(this.plan.start),
                bytes,
                limit,
            }),
        };
        tracing::debug!(%error, "giving up on a response body");
        this.labels.expired(limit);
        // The request's own deadline is the caller giving up, as a cancelled call is: the body
        // below ends as dropped, which the breaker and the adaptive limit leave out.
        if let Some(end) = this.end.take()
            && limit != Limit::Deadline
        {
            end.fail(Outcome::new(OutcomeKind::Timeout));
        }
        this.state.set(State::Done);
        *this.armed = None;
        *this.sleep = None;
        Poll::Ready(Some(Err(error)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Reading { body } => body.is_end_stream(),
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Reading { body } => body.size_hint(),
            State::Done => SizeHint::with_exact(0),
        }
    }
}

impl<B> fmt::Debug for TimeoutBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("armed", &self.armed)
            .field("bytes", &self.bytes)
            .field("done", &matches!(self.state, State::Done))
            .finish_non_exhaustive()
    }
}
