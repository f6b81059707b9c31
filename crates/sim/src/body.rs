//! Response bodies: whole, or a timed script of chunks that can end cleanly, with an error
//! event, or by dropping the connection.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::state::InFlight;

/// How a scripted body ends after its last chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Cleanly.
    Finish,
    /// The connection breaks (the body yields an error, and the server drops it).
    Disconnect,
    /// Nothing more, ever: the body stays open until the client drops it.
    Stall,
}

/// A response body of the simulator.
pub struct SimBody {
    kind: Kind,
    // Freed when the body is done or dropped: the in-flight slot and the token refund.
    in_flight: Option<InFlight>,
}

enum Kind {
    Full(Option<Bytes>),
    Script {
        chunks: VecDeque<(Duration, Bytes)>,
        sleep: Pin<Box<Sleep>>,
        waiting: bool,
        ending: Ending,
        // A disconnect first lets the server flush what was sent, as a real one would have.
        flushed: bool,
    },
}

impl SimBody {
    /// A whole body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())),
            in_flight: None,
        }
    }

    /// A body that sends each chunk after its delay, then ends as `ending` says.
    pub(crate) fn script(chunks: Vec<(Duration, Bytes)>, ending: Ending) -> Self {
        Self {
            kind: Kind::Script {
                chunks: chunks.into(),
                sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
                waiting: false,
                ending,
                flushed: false,
            },
            in_flight: None,
        }
    }

    /// Holds `in_flight` until the body is done.
    pub(crate) fn holding(mut self, in_flight: Option<InFlight>) -> Self {
        self.in_flight = in_flight;
        self
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Kind::Script {
                chunks,
                sleep,
                waiting,
                ending,
                flushed,
            } => loop {
                let Some((delay, _)) = chunks.front() else {
                    break match ending {
                        Ending::Finish => None,
                        // Nothing will ever wake this body: only the client's drop ends it.
                        Ending::Stall => return Poll::Pending,
                        Ending::Disconnect if !*flushed => {
                            *flushed = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Ending::Disconnect => {
                            *ending = Ending::Finish;
                            Some(Err(io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                "simulated disconnect mid-stream",
                            )))
                        }
                    };
                };
                if !*waiting && !delay.is_zero() {
                    let deadline = Instant::now() + *delay;
                    sleep.as_mut().reset(deadline);
                    *waiting = true;
                }
                if *waiting {
                    ready!(sleep.as_mut().poll(cx));
                    *waiting = false;
                }
                if let Some((_, chunk)) = chunks.pop_front() {
                    break Some(Ok(Frame::data(chunk)));
                }
            },
        };
        if polled.is_none() || matches!(polled, Some(Err(_))) {
            this.in_flight = None;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Script { chunks, ending, .. } => chunks.is_empty() && *ending == Ending::Finish,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Script { .. } => SizeHint::default(),
        }
    }
}

impl fmt::Debug for SimBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "full",
            Kind::Script { .. } => "script",
        };
        f.debug_struct("SimBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
