//! `[metrics]`: who may read `GET /metrics`, where, and which models it names.

use std::net::SocketAddr;

use serde::Deserialize;
use tollgate::ConfigError;
use tollgate_core::Secret;
use tollgate_core::model_name::check_model_name;

use super::invalid;
use super::keys::{Key, token};

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct MetricsSection {
    listen: Option<String>,
    token: Option<Key>,
    token_env: Option<String>,
    models: Vec<String>,
    max_unlisted_models: Option<usize>,
}

/// The metrics settings, checked.
#[derive(Debug, Default)]
pub(crate) struct MetricsSettings {
    /// Serve `/metrics` here (and not on the main address).
    pub(crate) listen: Option<SocketAddr>,
    /// The bearer token `/metrics` requires, if any.
    pub(crate) token: Option<Secret>,
    /// Models named in labels besides the providers' well-known ones.
    pub(crate) models: Vec<String>,
    /// How many other model names get a label of their own (default 0: a gateway's clients
    /// choose the names).
    pub(crate) max_unlisted_models: usize,
}

impl MetricsSection {
    pub(super) fn check(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MetricsSettings, ConfigError> {
        let listen = match &self.listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("{text:?} is not an address; use \"127.0.0.1:9464\""),
                )
            })?),
        };
        for (i, model) in self.models.iter().enumerate() {
            check_model_name(model)
                .map_err(|e| invalid(&format!("metrics.models[{i}]"), e.to_string()))?;
        }
        Ok(MetricsSettings {
            listen,
            token: token(
                "metrics.token",
                "metrics.token_env",
                self.token,
                self.token_env.as_deref(),
                env,
            )?,
            models: self.models,
            max_unlisted_models: self.max_unlisted_models.unwrap_or(0),
        })
    }
}
