//! `tollgate proxy`: an OpenAI- and Anthropic-compatible gateway.
//!
//! Clients (any OpenAI or Anthropic SDK, pointed at the gateway) call `/v1/...` with a gateway
//! key; each request goes through one shared [`LlmStack`] — so every client of the gateway is
//! paced, retried, broken and batched together — to the upstream with the upstream's key, and
//! the upstream's answer comes back as it arrives (streams frame by frame). `GET /health` and
//! `GET /metrics` (public) report the stack's state per scope; `/admin/*` (behind
//! `server.admin_token`) reports more and steers the breakers and the cache. The upstream is
//! `http://` or `https://` (rustls; see [`tls`]).

use std::future::IntoFuture as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{any, get};
use axum::serve::ListenerExt as _;
use http::{HeaderValue, header};
use rustls::pki_types::CertificateDer;
use tollgate::LlmStack;
use tollgate::circuit::CircuitState;
use tollgate_core::CredentialId;

mod admin;
mod config;
mod forward;
mod metrics;
mod refusal;
mod tls;

use self::forward::Gateway;
use self::metrics::Metrics;
pub(crate) use self::refusal::refusal_kind;
pub(crate) use self::tls::http_client;

/// Arguments of `tollgate proxy`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The config file: TOML with server, upstream and stack tables (see docs/tollgate.toml).
    #[arg(long)]
    config: PathBuf,
    /// Listen here instead of the config's `server.listen` (port 0 picks a free one).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log level on stderr: error, warn, info, debug (one line per request), trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let path = &args.config;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut config = config::parse(&text, &|name| std::env::var(name).ok())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // A relative ca_file is read from the config file's directory.
    let extra_roots = match &config.upstream.ca_file {
        None => Vec::new(),
        Some(file) => {
            let file = path
                .parent()
                .map_or_else(|| file.clone(), |dir| dir.join(file));
            tls::read_ca_file(&file)
                .map_err(|e| format!("{}: upstream.ca_file: {e}", path.display()))?
        }
    };
    // Fails only if a subscriber is already installed, which then keeps logging.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .try_init();
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(config, &extra_roots))
}

async fn serve(
    config: config::ProxyConfig,
    extra_roots: &[CertificateDer<'static>],
) -> Result<(), String> {
    // The recorder first: the layers register their metrics with whatever is installed then.
    let metrics = Arc::new(Metrics::new(metrics::install()?));
    let stack = LlmStack::new(&config.stack).map_err(|e| format!("stack.{e}"))?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.upkeep();
        }
    });
    let counted = metrics.clone();
    let client = tower::ServiceBuilder::new()
        .map_result(move |result: Result<http::Response<_>, _>| {
            match &result {
                Ok(response) => counted.upstream_call(response.status().as_u16()),
                Err(_) => counted.upstream_error(),
            }
            result
        })
        .service(http_client(config.upstream.connect_timeout, extra_roots)?);
    let (llm, handle) = stack.service(client);
    let admin = config.admin_token.as_ref().map(|token| {
        let credential = config
            .upstream
            .key
            .as_ref()
            .map(|key| CredentialId::from_secret(key.expose().as_bytes()));
        admin::Admin::new(token, handle.clone(), credential)
    });
    let admin_enabled = admin.is_some();
    let client_keys_required = config.clients.required();
    let gateway = Arc::new(Gateway {
        llm,
        handle,
        credential: config.upstream.credential(),
        scheme: config.upstream.scheme.clone(),
        authority: config.upstream.authority.clone(),
        prefix: config.upstream.prefix.clone(),
        clients: config.clients,
        max_body_bytes: config.max_body_bytes,
        metrics,
    });
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/v1/{*path}", any(forward::forward))
        .fallback(refusal::not_found)
        .with_state(gateway);
    if let Some(admin) = admin {
        app = app.merge(admin::routes(admin));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    let upstream = &config.upstream;
    let upstream = format!(
        "{}://{}{}",
        upstream.scheme, upstream.authority, upstream.prefix
    );
    tracing::info!(%addr, upstream, client_keys_required, admin_enabled, "gateway listening");
    if !client_keys_required && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no server.api_keys: anyone who reaches this address may call");
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    crate::sim::shutdown_signal().await;
    tracing::info!(
        grace = ?config.shutdown_grace,
        "shutting down: no new connections; open requests may finish"
    );
    let _ = stop.send(());
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("the server failed: {e}")),
        Ok(Err(e)) => Err(format!("the server task failed: {e}")),
        Err(_) => {
            tracing::warn!("the grace period is over: closing the requests still open");
            Ok(())
        }
    }
}

/// `GET /health`: every scope's breaker, overload state and limit, as JSON.
async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    let scopes = gateway.handle.health();
    let degraded = scopes.iter().any(|s| {
        matches!(
            s.circuit,
            CircuitState::Open | CircuitState::HalfOpen | CircuitState::ForcedOpen
        )
    });
    let scopes: Vec<_> = scopes
        .iter()
        .map(|s| {
            serde_json::json!({
                "scope": s.scope.to_string(),
                "provider": s.scope.provider().as_str(),
                "credential": s.scope.credential().map(|c| c.as_str()),
                "model": s.scope.model(),
                "circuit": s.circuit.as_str(),
                "overload": s.overload.as_str(),
                "limit": s.limit,
                "in_flight": s.in_flight,
            })
        })
        .collect();
    let body = serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "scopes": scopes,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /metrics`: Prometheus text.
async fn prometheus(State(gateway): State<Arc<Gateway>>) -> Response {
    let text = gateway.metrics.render(&gateway.handle.health());
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
