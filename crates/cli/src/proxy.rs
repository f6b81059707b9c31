//! `tollgate proxy`: an OpenAI- and Anthropic-compatible gateway.
//!
//! Clients (any OpenAI or Anthropic SDK, pointed at the gateway) call `/v1/...` with a gateway
//! key. Each request goes through a shared [`LlmStack`](tollgate::LlmStack) — so every client
//! of the gateway is paced, retried, broken and batched together — to the one `[upstream]`
//! with the upstream's key, or to the `[[models]]` group its `model` names: a stack of its own
//! over a pool of deployments × keys, with the group's fallbacks in front (see [`routes`] and
//! docs/gateway.md). The upstream's answer comes back as it arrives (streams frame by frame).
//! `GET /health` and `GET /metrics` (public) report the stacks' state per scope and member;
//! `/admin/*` (behind `server.admin_token`) reports more and steers the breakers, the cache
//! and the pools. `SIGHUP` reloads the config ([`reload`]). Upstreams are `http://` or
//! `https://` (rustls; see [`tls`]).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get};
use http::{HeaderValue, StatusCode, header};
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tollgate::circuit::CircuitState;

mod admin;
mod admission;
mod config;
mod forward;
mod headers;
mod metrics;
mod models;
mod refusal;
mod relay;
mod reload;
mod routes;
mod serve;
mod tenant;
mod tls;

use self::config::ClientKeys;
use self::forward::Gateway;
use self::metrics::Metrics;
pub(crate) use self::refusal::refusal_kind;
use self::routes::Routes;
use self::serve::{ConnLimits, Ended, ServeLimits};
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
    let mut extra_roots = Vec::new();
    for (field, file) in config.ca_files() {
        let file = path.parent().map_or(file.clone(), |dir| dir.join(&file));
        extra_roots.extend(
            tls::read_ca_file(&file).map_err(|e| format!("{}: {field}: {e}", path.display()))?,
        );
    }
    // Fails only if a subscriber is already installed, which then keeps logging.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .try_init();
    raise_file_limit(config.limits.max_connections);
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(config, &extra_roots, path))
}

/// Raises the soft limit on open files to the hard one: each connection, each upstream
/// connection and each open file takes a descriptor, and the usual soft limit (1,024, or 256)
/// is below what `server.max_connections` allows.
fn raise_file_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            limit.current
        }
    };
    // Each client connection may bring an upstream connection; leave room for files and logs.
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(64);
    if soft.is_some_and(|soft| soft < needed) {
        tracing::warn!(
            open_files = soft,
            max_connections,
            "the open-file limit is below what server.max_connections needs (twice as many, \
             plus 64): lower max_connections or raise the limit (ulimit -n)"
        );
    }
}

async fn serve(
    config: config::ProxyConfig,
    extra_roots: &[CertificateDer<'static>],
    path: &std::path::Path,
) -> Result<(), String> {
    // Before the recorder and the stack: every layer labels its series by this policy.
    let labels = tollgate_core::model_labels::model_labels();
    labels.list(&config.metrics.models);
    label_groups(&config);
    labels.set_max_unlisted(config.metrics.max_unlisted_models);
    // The recorder first: the layers register their metrics with whatever is installed then.
    let metrics = Arc::new(Metrics::new(metrics::install()?));
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.upkeep();
        }
    });
    let counted = metrics.clone();
    let connect_timeout = config
        .routing
        .upstream()
        .map_or(Duration::from_secs(10), |u| u.connect_timeout);
    let client = tower::ServiceBuilder::new()
        .map_result(move |result: Result<http::Response<_>, _>| {
            match &result {
                Ok(response) => counted.upstream_call(response.status().as_u16()),
                Err(_) => counted.upstream_error(),
            }
            result
        })
        .service(http_client(connect_timeout, extra_roots)?);
    let env = |name: &str| std::env::var(name).ok();
    // Connects what the stacks keep outside this process (Redis) before serving anyone.
    let spend = routes::SpendFile::default().for_config(&config, path)?;
    let routes = Routes::build(&config, &client, None, &spend, &env).await?;
    let client_keys_required = config.clients.required();
    let limits = &config.limits;
    let gateway = Arc::new(Gateway::new(&config, routes, metrics));
    let admin = config
        .admin_token
        .as_ref()
        .map(|token| admin::Admin::new(token, gateway.clone()));
    let admin_enabled = admin.is_some();
    tokio::spawn(reload::on_hangup(
        path.to_owned(),
        gateway.clone(),
        client,
        spend,
    ));
    let metrics_token = config
        .metrics
        .token
        .as_ref()
        .map(|token| Arc::new(ClientKeys::new([token.expose()])));
    let metrics_routes = Router::new()
        .route("/metrics", get(prometheus))
        .route_layer(middleware::from_fn_with_state(
            metrics_token,
            require_metrics_token,
        ))
        .with_state(gateway.clone());
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/v1/{*path}", any(forward::forward))
        .fallback(refusal::not_found)
        .with_state(gateway.clone());
    if config.metrics.listen.is_none() {
        app = app.merge(metrics_routes.clone());
    }
    if let Some(admin) = admin {
        app = app.merge(admin::routes(admin));
    }
    let serve_limits = ServeLimits {
        conn: ConnLimits {
            header_read: limits.header_read_timeout,
            idle: limits.idle_timeout,
            send: limits.send_timeout,
        },
        max_connections: limits.max_connections,
        http2_max_concurrent_streams: limits.http2_max_concurrent_streams,
    };
    // Every listener is bound before the address is printed: a client that reads it may
    // connect to any of them at once.
    let listener = bind(config.listen).await?;
    let addr = local_addr(&listener)?;
    let metrics_listener = match config.metrics.listen {
        Some(at) => Some(bind(at).await?),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let grace = config.shutdown_grace;
    let mut servers = vec![tokio::spawn(serve::serve(
        listener,
        app,
        serve_limits,
        stopped.clone(),
        grace,
    ))];
    let mut printed = format!("listening on http://{addr}\n");
    if let Some(listener) = metrics_listener {
        printed.push_str(&format!(
            "metrics on http://{}/metrics\n",
            local_addr(&listener)?
        ));
        servers.push(tokio::spawn(serve::serve(
            listener,
            metrics_routes,
            serve_limits,
            stopped,
            grace,
        )));
    }
    let mut stdout = std::io::stdout();
    stdout
        .write_all(printed.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    let upstream = match &config.routing {
        config::Routing::Upstream(u) => format!("{}://{}{}", u.scheme, u.authority, u.prefix),
        config::Routing::Models(_) => format!("models: {}", gateway.routes().names()),
    };
    tracing::info!(%addr, upstream, client_keys_required, admin_enabled, "gateway listening");
    if !client_keys_required && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no server.api_keys: anyone who reaches this address may call");
    }
    crate::sim::shutdown_signal().await;
    tracing::info!(
        ?grace,
        "shutting down: no new connections; open requests may finish"
    );
    let _ = stop.send(true);
    let mut cut = 0;
    for server in servers {
        match server.await {
            Ok(Ended::Drained) => {}
            Ok(Ended::Cut { requests }) => cut += requests,
            Err(e) => return Err(format!("the server task failed: {e}")),
        }
    }
    if cut > 0 {
        tracing::warn!(
            requests = cut,
            "the grace period is over: requests still open were cut"
        );
        return Err(format!(
            "shut down with {cut} requests cut short after the {grace:?} grace period \
             (server.shutdown_grace)"
        ));
    }
    Ok(())
}

/// Gives each model group, and each model its deployments ask for, a metrics label of its
/// own: a group's name is a model its clients send, and the members' scopes carry their
/// deployments' models.
pub(crate) fn label_groups(config: &config::ProxyConfig) {
    let config::Routing::Models(groups) = &config.routing else {
        return;
    };
    let labels = tollgate_core::model_labels::model_labels();
    labels.list(groups.iter().map(|g| g.name.as_str()));
    labels.list(groups.iter().flat_map(|g| {
        let pool = g.stack.pool.iter().flat_map(|p| &p.members);
        pool.chain(&g.passthrough)
            .filter_map(|m| m.model.as_deref())
    }));
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, String> {
    listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// `/metrics` behind `[metrics] token`, when one is set.
async fn require_metrics_token(
    State(token): State<Option<Arc<ClientKeys>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    if admin::presented_token(request.headers()).is_some_and(|t| token.admits(t)) {
        return next.run(request).await;
    }
    let mut response = refusal::error_response(
        refusal::Dialect::OpenAi,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "tollgate: /metrics needs Authorization: Bearer <metrics.token>",
        None,
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `GET /health`: every scope's breaker, overload state and limit, and with model groups
/// each group's members, as JSON.
async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    let routes = gateway.routes();
    let mut degraded = false;
    let mut scopes = Vec::new();
    for route in routes.all() {
        for s in route.handle.health() {
            degraded |= matches!(
                s.circuit,
                CircuitState::Open | CircuitState::HalfOpen | CircuitState::ForcedOpen
            );
            let mut entry = serde_json::json!({
                "scope": s.scope.to_string(),
                "provider": s.scope.provider().as_str(),
                "credential": s.scope.credential().map(|c| c.as_str()),
                "model": s.scope.model(),
                "circuit": s.circuit.as_str(),
                "overload": s.overload.as_str(),
                "limit": s.limit,
                "in_flight": s.in_flight,
                "rate_limits": rate_limits_json(&s.rate_limits),
            });
            if let Some(name) = route.name() {
                entry["group"] = name.into();
            }
            scopes.push(entry);
        }
    }
    let models: Vec<serde_json::Value> = routes
        .all()
        .iter()
        .filter(|r| r.group.is_some())
        .map(admin::group_json)
        .collect();
    let mut body = serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "scopes": scopes,
    });
    if !models.is_empty() {
        body["models"] = models.into();
    }
    admin::json(StatusCode::OK, &body)
}

/// A scope's rate limits: each dimension's quota, where it comes from (`configured`,
/// `headers`, or `refusals`: learned from the provider's 429s), what is left now, and what
/// calls in flight hold (`reserved`).
pub(crate) fn rate_limits_json(limits: &[tollgate::ratelimit::LimitState]) -> serde_json::Value {
    limits
        .iter()
        .map(|l| {
            serde_json::json!({
                "dimension": l.dimension.as_str(),
                "source": l.source.as_str(),
                "per_minute": (l.per_minute * 100.0).round() / 100.0,
                "limit": l.quota.limit(),
                "period_seconds": l.quota.period().as_secs(),
                "remaining": l.remaining,
                "reserved": l.reserved,
            })
        })
        .collect()
}

/// `GET /metrics`: Prometheus text.
async fn prometheus(State(gateway): State<Arc<Gateway>>) -> Response {
    let routes = gateway.routes();
    let scopes: Vec<_> = routes
        .all()
        .iter()
        .flat_map(|r| r.handle.health())
        .collect();
    let mut text = gateway.metrics.render(&scopes);
    tenant::write_tenant_metrics(&mut text, &routes);
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
