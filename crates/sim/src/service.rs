//! [`SimService`]: the simulator as a tower `Service`, usable in-process (with paused time) or
//! behind the loopback server.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::error::ConfigError;
use tower::Service;

use crate::batch::BatchSummary;
use crate::body::SimBody;
use crate::config::SimConfig;
use crate::dialect::{Dialect, Refuse};
use crate::generate::generate;
use crate::respond::refuse;
use crate::route::route;
use crate::state::Shared;
use crate::stats::{LogEntry, SimStats};

/// The simulated provider as a `Service<http::Request<B>>`.
///
/// Call it directly for in-process tests (every delay is `tokio::time`, so
/// `#[tokio::test(start_paused = true)]` runs minutes of simulated traffic in milliseconds), or
/// serve it over loopback with [`Sim::start`](crate::Sim::start).
///
/// # Clone
///
/// Clones share one simulator: the same keys, limits, counters and log.
#[derive(Clone, Debug)]
pub struct SimService {
    shared: Arc<Shared>,
}

impl SimService {
    /// A simulator with `config`.
    ///
    /// # Errors
    ///
    /// The first invalid configuration value.
    pub fn new(config: SimConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(config)),
        })
    }

    /// The configuration it runs.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// The counters now.
    pub fn stats(&self) -> SimStats {
        let mut stats = self.shared.lock().stats.clone();
        stats.phase = self
            .shared
            .conditions(Instant::now())
            .phase
            .map(str::to_owned);
        stats
    }

    /// The request log, oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.lock().log()
    }

    /// Every batch created so far through either Batch API, oldest first: its id, API, status
    /// now and the `custom_id`s of its requests in input order. A test checks with it what a
    /// client submitted (every job in exactly one batch, say) without listing through HTTP.
    /// [`reset`](Self::reset) keeps the batches.
    pub fn batches(&self) -> Vec<BatchSummary> {
        crate::batch::summaries(&self.shared.lock().batches, Instant::now())
    }

    /// Clears the counters and the log and refills every key's limits (files and batches
    /// stay).
    pub fn reset(&self) {
        self.shared
            .lock()
            .reset(&self.shared.config, Instant::now());
    }
}

impl<B> Service<Request<B>> for SimService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<SimBody>;
    type Error = Infallible;
    // A test double, not a layer: one boxed future per request keeps the handlers plain
    // `async fn`s.
    type Future = Pin<Box<dyn Future<Output = Result<Response<SimBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

impl SimService {
    async fn handle<B>(&self, request: Request<B>) -> Response<SimBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        match (&parts.method, path.as_str()) {
            (&Method::GET, "/sim/stats") => {
                let stats = serde_json::to_vec(&self.stats()).unwrap_or_default();
                return json(StatusCode::OK, stats);
            }
            (&Method::POST, "/sim/reset") => {
                self.reset();
                return json(StatusCode::OK, b"{\"reset\":true}".to_vec());
            }
            _ => {}
        }
        let shared = &self.shared;
        let seq = shared.next_seq();
        let mut entry = LogEntry {
            seq,
            at: shared.elapsed(Instant::now()),
            key: None,
            route: format!("{} {path}", parts.method),
            model: None,
            status: 0,
            rejection: None,
            input_tokens: 0,
            cached_input_tokens: 0,
            output_tokens: 0,
            stream: false,
        };
        let flavor = shared.config.openai_flavor;
        let response = if let Some(call) = route(&parts.method, &parts.uri, flavor) {
            generate(shared, &call, &parts, body, &mut entry).await
        } else if let Some(models) = crate::models::route(&parts.method, &path) {
            crate::models::handle(shared, &models, &parts, &mut entry)
        } else if let Some(route) = crate::batch::route(&parts.method, &path) {
            crate::batch::handle(shared, route, &parts, body, &mut entry).await
        } else {
            let refusal = Refuse::NotFound(entry.route.clone());
            let dialect = Dialect::of_path(&path, flavor);
            refuse(shared, dialect, refusal, &mut entry, Default::default())
        };
        entry.status = response.status().as_u16();
        shared.lock().record(entry, shared.config.log_capacity);
        response
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
