//! `SIGHUP`: read the config file again and put its routes in place. Requests in flight finish
//! on the routes they started with; a group whose settings did not change keeps its stack (its
//! breakers, limits and cooldowns). A config that does not load is refused, its error logged,
//! and the running one kept.
//!
//! What a reload replaces: the client keys (`server.api_keys`), `[upstream]` or `[[models]]`,
//! and `[stack]`. The rest of `[server]` (where it listens, its limits, the admin token) and
//! `[metrics]`, and the deployments' `ca_file` roots take effect at the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::signal::unix::{SignalKind, signal};
use tollgate_core::BoxError;

use super::config;
use super::forward::Gateway;
use super::routes::{Routes, SpendFile, UpstreamClient};

/// Reloads the config at `path` on every `SIGHUP`, for as long as the gateway runs.
pub(crate) async fn on_hangup<S, RB>(
    path: PathBuf,
    gateway: Arc<Gateway>,
    client: S,
    mut spend: SpendFile,
) where
    S: UpstreamClient<RB>,
    RB: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: the config cannot be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match reload(&path, &gateway, &client, &mut spend).await {
            Ok(()) => tracing::info!(
                config = %path.display(),
                models = %gateway.routes().names(),
                "config reloaded: new requests take the new routes; requests in flight finish \
                 on the old"
            ),
            Err(error) => tracing::error!(
                config = %path.display(),
                "the config was not reloaded, the running one is kept: {error}"
            ),
        }
    }
}

/// Reads, checks and builds the config at `path`, then puts its routes in place.
pub(crate) async fn reload<S, RB>(
    path: &Path,
    gateway: &Gateway,
    client: &S,
    spend: &mut SpendFile,
) -> Result<(), String>
where
    S: UpstreamClient<RB>,
    RB: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    let file = path.to_owned();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(file))
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    let config = config::parse(&text, &env).map_err(|e| format!("{}: {e}", path.display()))?;
    super::label_groups(&config);
    let previous = gateway.routes();
    *spend = spend.for_config(&config, path)?;
    let routes = Routes::build(&config, client, Some(&previous), spend, &env).await?;
    gateway.replace(routes);
    Ok(())
}
