//! `[server]`: where the gateway listens, who may call, and what each client may hold. Every
//! limit and its default is listed in `docs/security.md`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tollgate::ConfigError;

use super::super::headers::ForwardedHeaders;
use super::keys::Key;
use super::{duration, invalid};

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ServerSection {
    pub(super) listen: Option<String>,
    pub(super) api_keys: Vec<Key>,
    pub(super) api_keys_env: Option<String>,
    pub(super) admin_token: Option<Key>,
    pub(super) admin_token_env: Option<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) request_timeout: Option<String>,
    pub(super) spend_file: Option<std::path::PathBuf>,
    max_body_bytes: Option<u64>,
    max_body_bytes_in_flight: Option<u64>,
    max_connections: Option<u64>,
    max_in_flight_per_key: Option<u64>,
    http2_max_concurrent_streams: Option<u32>,
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    body_read_timeout: Option<String>,
    send_timeout: Option<String>,
    forward_headers: Vec<String>,
    client_cache_headers: bool,
}

/// The largest request body accepted by default.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Request body bytes held at once by default, all clients together.
pub(crate) const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 128 << 20;
/// Connections open at once by default.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Concurrent HTTP/2 streams per connection by default.
pub(crate) const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// What the gateway allows each client, checked.
#[derive(Debug)]
pub(crate) struct ClientLimits {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_body_bytes_in_flight: usize,
    pub(crate) max_connections: usize,
    /// Requests in flight per gateway key; `None` for no cap.
    pub(crate) max_in_flight_per_key: Option<usize>,
    /// Each key's cap (by its index): a tenant's own `max_in_flight`, else the share.
    pub(crate) max_in_flight: Vec<Option<usize>>,
    pub(crate) http2_max_concurrent_streams: u32,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) send_timeout: Duration,
    /// Which request headers go upstream (and reach the stack: clients' `cache-control` and
    /// `x-tollgate-cache` only with `server.client_cache_headers`).
    pub(crate) forward_headers: ForwardedHeaders,
}

fn count(field: &str, value: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(invalid(field, "0 is not allowed")),
        Some(n) => usize::try_from(n).map_err(|_| invalid(field, format!("{n} is too large"))),
    }
}

fn timeout(field: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let value = duration(field, text, default)?;
    if value.is_zero() {
        return Err(invalid(field, "0 is not allowed"));
    }
    Ok(value)
}

impl ServerSection {
    /// The client limits; `keys` is how many gateway keys there are, `stack_slots` the stack's
    /// concurrency limit and `stream_idle` its idle limit between stream chunks (the defaults
    /// of the per-key share and the send timeout).
    pub(super) fn client_limits(
        &self,
        keys: usize,
        stack_slots: usize,
        stream_idle: Duration,
    ) -> Result<ClientLimits, ConfigError> {
        let max_body_bytes = count(
            "server.max_body_bytes",
            self.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        )?;
        let max_body_bytes_in_flight = count(
            "server.max_body_bytes_in_flight",
            self.max_body_bytes_in_flight,
            DEFAULT_MAX_BODY_BYTES_IN_FLIGHT.max(max_body_bytes),
        )?;
        if max_body_bytes_in_flight < max_body_bytes {
            return Err(invalid(
                "server.max_body_bytes_in_flight",
                format!(
                    "{max_body_bytes_in_flight} is less than server.max_body_bytes \
                     ({max_body_bytes}): one body must fit"
                ),
            ));
        }
        // With several keys, no one key holds every slot of the stack by default.
        let shared = (keys >= 2).then(|| (stack_slots / 2).max(1));
        let max_in_flight_per_key = match self.max_in_flight_per_key {
            None => shared,
            Some(n) => Some(count("server.max_in_flight_per_key", Some(n), 0)?),
        };
        let forward_headers = ForwardedHeaders::new(
            self.forward_headers.iter().map(String::as_str).chain(
                self.client_cache_headers
                    .then_some(["cache-control", "x-tollgate-cache"])
                    .into_iter()
                    .flatten(),
            ),
        )
        .map_err(|why| invalid("server.forward_headers", why))?;
        Ok(ClientLimits {
            max_body_bytes,
            max_body_bytes_in_flight,
            max_connections: count(
                "server.max_connections",
                self.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            max_in_flight_per_key,
            max_in_flight: vec![max_in_flight_per_key; keys],
            http2_max_concurrent_streams: match self.http2_max_concurrent_streams {
                Some(0) => {
                    return Err(invalid(
                        "server.http2_max_concurrent_streams",
                        "0 is not allowed",
                    ));
                }
                n => n.unwrap_or(DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS),
            },
            header_read_timeout: timeout(
                "server.header_read_timeout",
                self.header_read_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            idle_timeout: timeout(
                "server.idle_timeout",
                self.idle_timeout.as_deref(),
                Duration::from_secs(60),
            )?,
            body_read_timeout: timeout(
                "server.body_read_timeout",
                self.body_read_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
            send_timeout: timeout(
                "server.send_timeout",
                self.send_timeout.as_deref(),
                stream_idle,
            )?,
            forward_headers,
        })
    }

    /// `server.listen`, or the default.
    pub(super) fn listen(&self) -> Result<SocketAddr, ConfigError> {
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:8080");
        listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{listen:?} is not an address; use \"127.0.0.1:8080\" (port 0 picks a free \
                     one)"
                ),
            )
        })
    }
}
