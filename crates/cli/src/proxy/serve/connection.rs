//! One client connection, bounded in time whatever the client does.
//!
//! hyper closes a connection when its IO fails, so the bounds live in the IO: [`Watched`]
//! fails a read or a write that has waited past its deadline.
//!
//! - **Until the first request**: a connection must deliver a whole request head within the
//!   header-read timeout of being accepted, however slowly it trickles bytes (slowloris), for
//!   HTTP/1, HTTP/2 and the protocol sniffing before either.
//! - **Idle**: with no request in flight, a connection is closed the idle timeout after its
//!   last request ended. Bytes do not count: a client trickling pings or half a head does not
//!   keep its slot.
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    started: AtomicBool,
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
            started: AtomicBool::new(false),
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
        self.started.store(true, Ordering::Relaxed);
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

    /// When a read waiting now must give up, if ever: the first request's head is due the
    /// header-read timeout after accept; with requests done and none in flight, the next is due
    /// the idle timeout after the last ended.
    fn read_deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        if !self.started.load(Ordering::Relaxed) {
            return Some(self.accepted + limits.header_read);
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
        Some(self.accepted + last + limits.idle)
    }
}

/// A client's socket whose reads and writes fail once past their deadlines (see the module
/// docs).
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    timer: Pin<Box<Sleep>>,
    state: Arc<ConnState>,
    limits: ConnLimits,
    read_deadline: Option<Instant>,
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
            state,
            limits,
            read_deadline: None,
            write_blocked: None,
        }
    }

    /// Sets the timer to the earliest deadline that applies and fails if it has passed.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let write = self.write_blocked.map(|since| since + self.limits.send);
        let deadline = match (self.read_deadline, write) {
            (Some(r), Some(w)) => r.min(w),
            (Some(d), None) | (None, Some(d)) => d,
            (None, None) => return Ok(()),
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        Err(if write.is_some_and(|w| w <= Instant::now()) {
            expired("the client took nothing for the send timeout")
        } else if self.state.started.load(Ordering::Relaxed) {
            expired("the connection was idle past the idle timeout")
        } else {
            expired("no request head within the header-read timeout")
        })
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
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.state.waker.register(cx.waker());
                this.read_deadline = this.state.read_deadline(&this.limits);
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
