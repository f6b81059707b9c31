//! The gateway's HTTP server: hyper-util's connection builder with a timer, so that every
//! client is bounded in time and in number.
//!
//! `axum::serve` runs hyper without a timer: no header-read or idle timeout, no cap on
//! connections. 500 connections that never finish their headers stayed open for good, and with
//! a 256 file limit valid requests timed out behind them. Here:
//!
//! - at most `max_connections` are open; past it, new ones wait in the kernel's backlog and a
//!   warning says so (at most once every 10 s);
//! - each connection is [`Watched`]: the first request head is due within the header-read
//!   timeout, an idle connection is closed after the idle timeout, a write the client does not
//!   take fails after the send timeout;
//! - request heads are bounded in bytes (64 KiB) too; HTTP/2 gets keep-alive pings, a cap on
//!   concurrent streams, on header lists and on reset floods;
//! - on shutdown, no new connection is accepted, open ones finish their requests within the
//!   grace period, and whatever is still open then is cut and reported.

mod connection;
mod tracked;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

pub(crate) use self::connection::ConnLimits;
use self::connection::{ConnState, Watched};
use self::tracked::Tracked;

/// What bounds the server's clients.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServeLimits {
    pub(crate) conn: ConnLimits,
    pub(crate) max_connections: usize,
    pub(crate) http2_max_concurrent_streams: u32,
}

/// The most bytes of headers a request may carry (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// How a server ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Every connection closed within the grace period.
    Drained,
    /// The grace period ran out with requests still in flight; they were cut.
    Cut { requests: usize },
}

/// Serves `app` on `listener` until `stop` says so, then drains for `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Ended {
    let builder = Arc::new(builder(&limits));
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut warned_full: Option<Instant> = None;
    let mut warned_accept: Option<Instant> = None;
    loop {
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    warned_full = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes \
                         (server.max_connections)"
                    );
                }
                tokio::select! {
                    permit = connections.clone().acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (tcp, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // moment rather than spin.
                if warned_accept.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    warned_accept = Some(Instant::now());
                    tracing::warn!(%error, "cannot accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let io = TokioIo::new(Watched::new(tcp, state.clone(), limits.conn));
        let service = TowerToHyperService::new(Tracked::new(app.clone(), state, in_flight.clone()));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection(io, service);
            if let Err(error) = watcher.watch(connection).await {
                let error = super::refusal::chain(error.as_ref());
                tracing::debug!(%error, "connection closed");
            }
            drop(permit);
        });
    }
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Ended::Drained,
        Err(_) => Ended::Cut {
            requests: in_flight.load(Ordering::Acquire),
        },
    }
}

fn builder(limits: &ServeLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's own clock bounds every head (see `Watched`), without a timer reset
        // per request.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES as usize + 16 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_BYTES)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    builder
}
