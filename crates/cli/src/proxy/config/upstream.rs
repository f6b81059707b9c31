//! `[upstream]`: where requests go and with which key.

use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use tollgate::ConfigError;
use tollgate_core::Secret;

use super::{duration, invalid};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct UpstreamSection {
    base_url: Option<String>,
    key_env: Option<String>,
    auth: Auth,
    connect_timeout: Option<String>,
    ca_file: Option<PathBuf>,
}

/// How the upstream key is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum Auth {
    /// `Authorization: Bearer <key>` (OpenAI and every OpenAI-compatible server).
    #[default]
    #[serde(rename = "bearer")]
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    #[serde(rename = "x-api-key")]
    XApiKey,
}

/// The upstream server and its key.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// A path prefix, without a trailing `/` (`""` for none).
    pub(crate) prefix: String,
    /// The key, if the upstream wants one.
    pub(crate) key: Option<Secret>,
    pub(crate) auth: Auth,
    pub(crate) connect_timeout: Duration,
    /// A PEM file of extra trusted roots (https only), as written: a relative path is read
    /// from the config file's directory.
    pub(crate) ca_file: Option<PathBuf>,
}

impl Upstream {
    /// The header that carries the key upstream, marked sensitive (its `Debug` is
    /// `Sensitive`; HTTP/2 never indexes it).
    pub(crate) fn credential(&self) -> Option<(HeaderName, HeaderValue)> {
        let key = self.key.as_ref()?;
        let (name, value) = match self.auth {
            Auth::Bearer => (
                http::header::AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer {}", key.expose())),
            ),
            Auth::XApiKey => (
                HeaderName::from_static("x-api-key"),
                HeaderValue::try_from(key.expose()),
            ),
        };
        // Checked when the config was loaded.
        let mut value = value.ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }
}

pub(super) fn check_upstream(
    section: UpstreamSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstream, ConfigError> {
    const FIELD: &str = "upstream.base_url";
    let text = section
        .base_url
        .ok_or_else(|| invalid(FIELD, "missing; e.g. \"http://127.0.0.1:9000\""))?;
    if text.contains('@') {
        // Not echoed: it may hold a password.
        return Err(invalid(
            FIELD,
            "credentials in the URL are not supported; put the key in key_env",
        ));
    }
    let uri: Uri = text
        .parse()
        .map_err(|e| invalid(FIELD, format!("{text:?} is not a URL ({e})")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err(invalid(
            FIELD,
            format!("{text:?} needs a scheme and a host, e.g. \"http://127.0.0.1:9000\""),
        ));
    };
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(invalid(
            FIELD,
            format!("{text:?}: the scheme must be http or https"),
        ));
    }
    if section.ca_file.is_some() && scheme != Scheme::HTTPS {
        return Err(invalid(
            "upstream.ca_file",
            format!("is only used with an https base_url, and base_url is {text:?}"),
        ));
    }
    if section
        .ca_file
        .as_ref()
        .is_some_and(|f| f.as_os_str().is_empty())
    {
        return Err(invalid("upstream.ca_file", "an empty path is not allowed"));
    }
    if uri.query().is_some() {
        return Err(invalid(FIELD, format!("{text:?}: a query is not allowed")));
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    if prefix.ends_with("/v1") {
        return Err(invalid(
            FIELD,
            format!(
                "{text:?} ends in /v1: give the server's root; the client's /v1/... path is \
                 appended"
            ),
        ));
    }
    let key = match &section.key_env {
        None => None,
        Some(name) => {
            let value = env(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                invalid(
                    "upstream.key_env",
                    format!("the environment variable {name:?} is not set (or is empty)"),
                )
            })?;
            if HeaderValue::try_from(format!("Bearer {value}")).is_err() {
                return Err(invalid(
                    "upstream.key_env",
                    format!("the value of {name:?} is not a valid header value"),
                ));
            }
            Some(Secret::new(value))
        }
    };
    Ok(Upstream {
        scheme,
        authority,
        prefix,
        key,
        auth: section.auth,
        connect_timeout: duration(
            "upstream.connect_timeout",
            section.connect_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        ca_file: section.ca_file,
    })
}
