//! Serving the simulator over loopback: HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on one
//! port.

use std::net::SocketAddr;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tollgate_core::BoxError;

use crate::batch::BatchSummary;
use crate::config::SimConfig;
use crate::service::SimService;
use crate::stats::{LogEntry, SimStats};

/// Starts simulators.
#[derive(Debug)]
pub struct Sim;

impl Sim {
    /// Serves a simulator on `127.0.0.1` at a free port.
    ///
    /// # Errors
    ///
    /// An invalid configuration, or a socket that cannot be bound.
    pub async fn start(config: SimConfig) -> Result<SimHandle, BoxError> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves a simulator on `addr` (port 0 picks a free one).
    ///
    /// # Errors
    ///
    /// An invalid configuration, or a socket that cannot be bound.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, BoxError> {
        let service = SimService::new(config)?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, service.clone(), stopped));
        tracing::debug!(%addr, "simulator listening");
        Ok(SimHandle {
            addr,
            service,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

async fn serve(listener: TcpListener, service: SimService, mut stopped: oneshot::Receiver<()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            // Reap finished connections so the set does not grow with the connection count.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()))
                    .into_owned();
                connections.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                });
            }
        }
    }
    // Hung requests never finish on their own: stopping drops every connection.
    connections.abort_all();
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    service: SimService,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:{port}`, the base URL for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator itself (shares state with the server).
    pub fn service(&self) -> &SimService {
        &self.service
    }

    /// The counters now.
    pub fn stats(&self) -> SimStats {
        self.service.stats()
    }

    /// The request log, oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        self.service.log()
    }

    /// Every batch created so far, oldest first (see [`SimService::batches`]).
    pub fn batches(&self) -> Vec<BatchSummary> {
        self.service.batches()
    }

    /// Clears the counters and the log and refills every key's limits (files and batches
    /// stay).
    pub fn reset(&self) {
        self.service.reset();
    }

    /// Stops accepting, drops every connection, and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
