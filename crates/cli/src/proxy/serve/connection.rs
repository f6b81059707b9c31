//! One client connection, bounded in time whatever the client does.
//!
//! hyper closes a connection when its IO fails, so the bounds live in the IO: [`Watched`]
//! fails a read or a write that has waited past its deadline.
//!
//! - **Request heads**: a connection must deliver its first request head within the
//!   header-read timeout of being accepted, and each later head within the header-read timeout
//!   of its first byte, however slowly it trickles bytes (slowloris), for HTTP/1, HTTP/2 and
//!   the protocol sniffing before either. (hyper's own HTTP/1 header timer is off: this one
//!   covers more, and costs less.)
//! - **Idle**: with no request in flight and no head begun, a connection is closed the idle
//!   timeout after its last request ended.
//! - **Send stall**: a write that cannot proceed (the client stopped reading and its socket is
//!   full) fails after the send timeout, which closes the connection and drops the response
//!   with the upstream call behind it.
//!
//! A request is in flight from the head's arrival to the end (or drop) of its response body;
//! [`ConnState`] counts them, and the server's [`Tracked`](super::tracked::Tracked) service
//! keeps it up to date.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The time bounds of a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// From accept to the first request head.
    pub(crate) header_read: Duration,
    /// With no request in flight, from the last request's end.
    pub(crate) idle: Duration,
    /// A write that makes no progress.
    pub(crate) send: Duration,
}

/// What the connection's requests tell its IO.
#[derive(Debug)]
pub(crate) struct ConnState {
    accepted: Instant,
    /// How many requests have started.
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// When the last request started or ended, in ms after `accepted`.
    last_change_ms: AtomicU64,
    /// The connection's task, woken when its last request ends so the idle clock starts.
    waker: AtomicWaker,
}

impl ConnState {
    pub(crate) fn new() -> Self {
        Self {
            accepted: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        }
    }

    fn mark(&self) {
        let ms = self.accepted.elapsed().as_millis();
        self.last_change_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A request head arrived.
    pub(crate) fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.mark();
    }

    /// A request's response ended or was dropped.
    pub(crate) fn request_ended(&self) {
        self.mark();
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waker.wake();
        }
    }
}

impl ConnLimits {
    /// The shortest of the limits: the timer is never armed further ahead than this, so a
    /// deadline that starts later (a head's first byte, a blocked write) is never missed.
    fn shortest(&self) -> Duration {
        self.header_read.min(self.idle).min(self.send)
    }
}

/// A client's socket whose reads and writes fail once past their deadlines (see the module
/// docs).
///
/// The timer is armed lazily: at most once per [`shortest`](ConnLimits::shortest) limit, and
/// re-armed when it fires to whatever deadline applies then. A busy connection's deadlines move
/// with every request; resetting the timer for each would cost a timer-wheel update per
/// request. A deadline measured from an event after the timer was armed (a head's first byte, a
/// blocked write) is never later than the armed one; an idle deadline may be seen up to the
/// shortest limit late.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    timer: Pin<Box<Sleep>>,
    armed: bool,
    state: Arc<ConnState>,
    limits: ConnLimits,
    /// Whether a read is waiting for the client.
    read_waiting: bool,
    /// When the first byte of a head arrived on a connection with no request in flight, and
    /// how many requests had started then (once another starts, that head has arrived).
    head_started: Option<(Instant, u64)>,
    /// Since when a write has been waiting.
    write_blocked: Option<Instant>,
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, state: Arc<ConnState>, limits: ConnLimits) -> Self {
        Self {
            io,
            timer: Box::pin(tokio::time::sleep_until(
                state.accepted + limits.header_read,
            )),
            armed: true,
            state,
            limits,
            read_waiting: false,
            head_started: None,
            write_blocked: None,
        }
    }

    /// When the waiting read must give up, if ever: the first request's head is due the
    /// header-read timeout after accept, and so is a later head after its first byte; with no
    /// request in flight and no head begun, the next is due the idle timeout after the last
    /// request ended.
    fn read_deadline(&self) -> Option<Instant> {
        if !self.read_waiting {
            return None;
        }
        let state = &self.state;
        let requests = state.requests.load(Ordering::Acquire);
        if requests == 0 {
            return Some(state.accepted + self.limits.header_read);
        }
        if state.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.head_started {
            Some((first_byte, then)) if then == requests => first_byte + self.limits.header_read,
            _ => {
                let last = Duration::from_millis(state.last_change_ms.load(Ordering::Relaxed));
                state.accepted + last + self.limits.idle
            }
        })
    }

    /// Whether the read deadline now is the idle one (no head begun since the last request).
    fn idle_now(&self) -> bool {
        let requests = self.state.requests.load(Ordering::Acquire);
        requests > 0 && self.head_started.is_none_or(|(_, then)| then != requests)
    }

    fn arm(&mut self, deadline: Instant) {
        let furthest = Instant::now() + self.limits.shortest();
        self.timer.as_mut().reset(deadline.min(furthest));
        self.armed = true;
    }

    /// Fails once the earliest deadline that applies has passed; keeps the timer armed.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let write = self.write_blocked.map(|since| since + self.limits.send);
        let deadline = match (self.read_deadline(), write) {
            (Some(r), Some(w)) => Some(r.min(w)),
            (d, None) | (None, d) => d,
        };
        if !self.armed {
            let Some(deadline) = deadline else {
                return Ok(());
            };
            self.arm(deadline);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        self.armed = false;
        let now = Instant::now();
        match deadline {
            Some(deadline) if deadline <= now => Err(if write.is_some_and(|w| w <= now) {
                expired("the client took nothing for the send timeout")
            } else if self.read_deadline() == Some(deadline) && !self.idle_now() {
                expired("no request head within the header-read timeout")
            } else {
                expired("the connection was idle past the idle timeout")
            }),
            Some(deadline) => {
                self.arm(deadline);
                // Registers this task with the re-armed timer.
                let _ = self.timer.as_mut().poll(cx);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// After a write-side poll: progress clears the stall clock, a wait starts it.
    fn wrote<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(result) => {
                self.write_blocked = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                self.write_blocked.get_or_insert_with(Instant::now);
                self.check(cx)?;
                Poll::Pending
            }
        }
    }
}

/// Why a connection was closed by its own clock.
fn expired(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_waiting = false;
                let requests = this.state.requests.load(Ordering::Acquire);
                let head_pending = this.head_started.is_some_and(|(_, then)| then == requests);
                if requests > 0
                    && !head_pending
                    && buf.filled().len() > before
                    && this.state.in_flight.load(Ordering::Acquire) == 0
                {
                    this.head_started = Some((Instant::now(), requests));
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.read_waiting = true;
                this.state.waker.register(cx.waker());
                this.check(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LIMITS: ConnLimits = ConnLimits {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn a_trickling_client_gets_the_header_read_timeout_from_accept() {
        let (client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::new());
        let mut watched = Box::pin(Watched::new(server, state, LIMITS));
        let trickle = tokio::spawn(async move {
            let mut client = client;
            for _ in 0..100 {
                client.write_all(b"G").await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            client
        });
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let error = loop {
            match watched.read(&mut buf).await {
                Ok(_) => {}
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn no_read_deadline_while_a_request_is_in_flight_and_idle_after_it_ends() {
        let (_client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::new());
        state.request_started();
        let mut watched = Box::pin(Watched::new(server, state.clone(), LIMITS));
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(600), watched.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "a slow upstream is not the client's idleness"
        );
        let ended = Instant::now();
        state.request_ended();
        let error = watched.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(ended.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_head_is_due_the_header_read_timeout_after_its_first_byte() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::new());
        let mut watched = Box::pin(Watched::new(server, state.clone(), LIMITS));
        state.request_started();
        state.request_ended();
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let first = watched.read(&mut buf).await.unwrap();
        assert!(first > 0);
        let began = Instant::now();
        let error = watched.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("header-read"), "{error}");
        assert_eq!(
            began.elapsed(),
            Duration::from_secs(10),
            "not the 60 s idle timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_became_a_request_leaves_the_next_wait_to_the_idle_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::new());
        let mut watched = Box::pin(Watched::new(server, state.clone(), LIMITS));
        state.request_started();
        state.request_ended();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(watched.read(&mut buf).await.unwrap() > 0);
        // The head was whole: a request ran (its reads were not polled meanwhile) and ended.
        state.request_started();
        tokio::time::sleep(Duration::from_secs(5)).await;
        state.request_ended();
        let ended = Instant::now();
        let error = watched.read(&mut buf).await.unwrap_err();
        assert!(error.to_string().contains("idle"), "{error}");
        assert_eq!(ended.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_takes_fails_after_the_send_timeout() {
        let (_client, server) = tokio::io::duplex(16);
        let state = Arc::new(ConnState::new());
        state.request_started();
        let mut watched = Box::pin(Watched::new(server, state, LIMITS));
        tokio::time::sleep(Duration::from_secs(300)).await;
        let started = Instant::now();
        let error = watched.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(30),
            "measured from when the write blocked, not from the last write"
        );
    }
}
