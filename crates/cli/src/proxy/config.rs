//! `tollgate proxy`'s config file: where to listen, who may call, where to forward, and the
//! stack in between (`docs/tollgate.toml` is a commented example).
//!
//! Every error names the field (`server.listen`, `stack.circuit_breaker.failure_threshold`)
//! and the bad value — but never a key: keys are read into [`Secret`]s as they are parsed.

mod keys;
mod metrics;
mod models;
mod server;
mod tenants;
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tollgate::{ConfigError, StackConfig};
use tollgate_core::Secret;
use tollgate_core::config::RedisSettings;

pub(crate) use self::keys::ClientKeys;
pub(crate) use self::metrics::MetricsSettings;
pub(crate) use self::models::{Api, GroupAuth, ModelGroup};
pub(crate) use self::server::ClientLimits;
pub(crate) use self::tenants::Tenant;
#[cfg(test)]
pub(crate) use self::upstream::Auth;
pub(crate) use self::upstream::Upstream;
use self::upstream::{UpstreamSection, check_upstream};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: server::ServerSection,
    upstream: Option<UpstreamSection>,
    #[serde(default)]
    models: Vec<models::ModelSection>,
    #[serde(default)]
    tenants: Vec<tenants::TenantSection>,
    #[serde(default)]
    metrics: metrics::MetricsSection,
    /// Read by [`StackConfig::from_value`]: its preset, with these keys laid over.
    stack: Option<serde_json::Value>,
    /// The Redis a fleet of gateways shares its state through: every group's stack's
    /// `[redis]`.
    redis: Option<RedisSettings>,
}

/// The gateway's settings, checked.
#[derive(Debug)]
pub(crate) struct ProxyConfig {
    /// Where clients connect.
    pub(crate) listen: SocketAddr,
    /// Who may call; nobody needs a key when empty. `server.api_keys` first, then each
    /// tenant's key.
    pub(crate) clients: ClientKeys,
    /// The named tenants, in the order of their keys after `server.api_keys`.
    pub(crate) tenants: Vec<Tenant>,
    /// Where spend is kept across restarts, as written (a relative path is the config file's
    /// directory's): `server.spend_file`, by default `tollgate-spend.redb` there when there
    /// are budgets.
    pub(crate) spend_file: std::path::PathBuf,
    /// What each client may hold, and for how long.
    pub(crate) limits: ClientLimits,
    /// How long open requests (streams) may finish after a shutdown signal.
    pub(crate) shutdown_grace: Duration,
    /// Where requests go.
    pub(crate) routing: Routing,
    /// The longest a request through a model group may take, waiting for a deployment
    /// included; a client's shorter `x-stainless-timeout` wins.
    pub(crate) request_timeout: Duration,
    /// The stack in between.
    pub(crate) stack: StackConfig,
    /// The bearer token of `/admin/*`; the routes do not exist without one.
    pub(crate) admin_token: Option<Secret>,
    /// Who may read `/metrics`, where, and which models it names.
    pub(crate) metrics: MetricsSettings,
}

/// Where requests go: one server, or model groups.
#[derive(Debug)]
pub(crate) enum Routing {
    /// `[upstream]`: every request to one server with one key, whatever its model.
    Upstream(Upstream),
    /// `[[models]]`: a request's `model` names a group of deployments.
    Models(Vec<ModelGroup>),
}

impl ProxyConfig {
    /// Every budget the gateway keeps, in one set of books shared by every route: `[stack]`'s
    /// `[budget]` and each tenant's; `None` when there is none.
    pub(crate) fn budget(&self) -> Option<tollgate::budget::BudgetConfig> {
        let mut config = self.stack.budget.clone().unwrap_or_default();
        config
            .budgets
            .extend(self.tenants.iter().flat_map(Tenant::budgets));
        if self.stack.budget.is_none() && config.budgets.is_empty() {
            return None;
        }
        if let Routing::Models(groups) = &self.routing {
            price_groups(&mut config.prices, groups);
        }
        Some(config)
    }

    /// The PEM files of extra trusted roots, each with its field, as written (a relative path
    /// is the config file's directory's).
    pub(crate) fn ca_files(&self) -> Vec<(String, std::path::PathBuf)> {
        match &self.routing {
            Routing::Upstream(upstream) => upstream
                .ca_file
                .iter()
                .map(|f| ("upstream.ca_file".to_owned(), f.clone()))
                .collect(),
            Routing::Models(groups) => groups
                .iter()
                .enumerate()
                .flat_map(|(i, g)| {
                    g.ca_files
                        .iter()
                        .map(move |(field, f)| (format!("models[{i}].{field}"), f.clone()))
                })
                .collect(),
        }
    }
}

/// Prices each group by the name its clients send: its most expensive deployment's price (a
/// call's worst case must hold wherever the pool sends it), unless the prices name the group.
fn price_groups(prices: &mut tollgate::budget::PricesConfig, groups: &[ModelGroup]) {
    let Ok(table) = prices.table() else {
        // Checked, with its field, when the books are built.
        return;
    };
    for group in groups {
        if prices.models.iter().any(|m| m.model == group.name) {
            continue;
        }
        let members: Vec<&tollgate::pool::MemberConfig> = group
            .stack
            .pool
            .iter()
            .flat_map(|p| &p.members)
            .chain(&group.passthrough)
            .collect();
        let dearest = members
            .iter()
            .filter_map(|m| table.lookup(m.provider?, m.model.as_deref()?))
            .max_by_key(|p| (p.output, p.input));
        let (Some(price), Some(provider)) = (dearest, group.provider()) else {
            continue;
        };
        prices.models.push(tollgate::budget::ModelPrice {
            provider,
            model: group.name.clone(),
            input: price.input.as_per_million_f64(),
            cached_input: Some(price.cached_input.as_per_million_f64()),
            cache_write: Some(price.cache_write.as_per_million_f64()),
            output: price.output.as_per_million_f64(),
            batch_discount: Some(f64::from(price.batch_discount_ppm) / 1_000_000.0),
        });
    }
}

impl Routing {
    /// The single upstream, if that is how requests go.
    pub(crate) fn upstream(&self) -> Option<&Upstream> {
        match self {
            Self::Upstream(upstream) => Some(upstream),
            Self::Models(_) => None,
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(field.to_owned(), message.into())
}

fn duration(field: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => {
            tollgate_core::config::duration::parse(text).map_err(|why| invalid(field, why))
        }
    }
}

/// `[redis]`: the Redis every group's stack keeps its shared state in.
fn fleet_redis(settings: RedisSettings, stack: &StackConfig) -> Result<RedisSettings, ConfigError> {
    if stack.redis.is_some() {
        return Err(invalid(
            "stack.redis",
            "is set with [redis]: name the fleet's Redis once, in [redis]",
        ));
    }
    settings.validate().map_err(|e| e.within("redis"))?;
    Ok(settings)
}

/// Parses and checks a config file's text; `env` reads environment variables.
pub(crate) fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProxyConfig, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let server = file.server;
    let listen = server.listen()?;
    let mut keys: Vec<String> = Vec::new();
    for (i, key) in server.api_keys.iter().enumerate() {
        if key.0.expose().trim().is_empty() {
            return Err(invalid(
                &format!("server.api_keys[{i}]"),
                "an empty key is not allowed",
            ));
        }
        keys.push(key.0.expose().to_owned());
    }
    if let Some(name) = &server.api_keys_env {
        let value = env(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            invalid(
                "server.api_keys_env",
                format!("the environment variable {name:?} is not set (or is empty)"),
            )
        })?;
        keys.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        );
    }
    let mut stack = match file.stack {
        Some(value) => {
            StackConfig::from_value(value).map_err(|e| e.within("stack").located_in(text))?
        }
        None => StackConfig::default(),
    };
    if let Some(value) = file.redis {
        stack.redis = Some(fleet_redis(value, &stack).map_err(|e| e.located_in(text))?);
    }
    let shutdown_grace = duration(
        "server.shutdown_grace",
        server.shutdown_grace.as_deref(),
        Duration::from_secs(30),
    )?;
    let request_timeout = duration(
        "server.request_timeout",
        server.request_timeout.as_deref(),
        Duration::from_secs(600),
    )?;
    if request_timeout.is_zero() {
        return Err(invalid("server.request_timeout", "0 is not allowed"));
    }
    let routing = match (file.upstream, file.models.is_empty()) {
        (Some(_), false) => {
            return Err(invalid(
                "models",
                "set [upstream] (one server for every model) or [[models]] (groups by model), \
                 not both",
            )
            .at_line(tollgate_core::config::line_of(text, "models[0]")));
        }
        (None, true) => {
            return Err(invalid(
                "upstream",
                "the [upstream] table is missing; it needs at least base_url (or give \
                 [[models]] groups)",
            ));
        }
        (Some(upstream), true) => Routing::Upstream(check_upstream(upstream, env)?),
        (None, false) => {
            if stack.pool.is_some() {
                return Err(invalid(
                    "stack.pool",
                    "with [[models]], each group's deployments are its pool: move the members \
                     to a group's [[models.deployments]]",
                ));
            }
            Routing::Models(
                models::check_models(file.models, &stack, env).map_err(|e| e.located_in(text))?,
            )
        }
    };
    let groups: Vec<&str> = match &routing {
        Routing::Models(groups) => groups.iter().map(|g| g.name.as_str()).collect(),
        Routing::Upstream(_) => Vec::new(),
    };
    let tenants =
        tenants::check_tenants(file.tenants, &groups, env).map_err(|e| e.located_in(text))?;
    let anonymous = keys.len();
    for (i, (_, key)) in tenants.iter().enumerate() {
        if keys.iter().any(|k| k == key.expose()) {
            return Err(invalid(
                &format!("tenants[{i}].key_env"),
                "its key is also another tenant's or in server.api_keys: each key names one client",
            )
            .at_line(tollgate_core::config::line_of(
                text,
                &format!("tenants[{i}].key_env"),
            )));
        }
        keys.push(key.expose().to_owned());
    }
    let tenants: Vec<Tenant> = tenants.into_iter().map(|(tenant, _)| tenant).collect();
    let mut limits = server.client_limits(
        keys.len(),
        stack.max_concurrent_calls(),
        stack
            .stream_idle_timeout()
            .unwrap_or(Duration::from_secs(30)),
    )?;
    limits.max_in_flight = (0..keys.len())
        .map(|k| {
            k.checked_sub(anonymous)
                .and_then(|t| tenants[t].max_in_flight)
                .or(limits.max_in_flight_per_key)
        })
        .collect();
    let admin_token = keys::token(
        "server.admin_token",
        "server.admin_token_env",
        server.admin_token,
        server.admin_token_env.as_deref(),
        env,
    )?;
    let metrics = file.metrics.check(env)?;
    if let (Some(at), true) = (metrics.listen, metrics.listen == Some(listen)) {
        return Err(invalid(
            "metrics.listen",
            format!("{at} is server.listen too; leave metrics.listen out to serve /metrics there"),
        ));
    }
    let config = ProxyConfig {
        listen,
        clients: ClientKeys::new(keys.iter().map(String::as_str)),
        tenants,
        spend_file: server
            .spend_file
            .clone()
            .unwrap_or_else(|| "tollgate-spend.redb".into()),
        limits,
        shutdown_grace,
        routing,
        request_timeout,
        stack,
        admin_token,
        metrics,
    };
    // The tenants' budgets with [stack]'s, as the one set of books checks them.
    if let Some(budget) = config.budget() {
        budget.validate().map_err(|e| e.within("budgets"))?;
    }
    Ok(config)
}

/// A TOML error as `field (line N): message`: the field is the key on the line the error
/// points at, under the table that line is in.
fn toml_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else {
        return invalid("config", message);
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let header = line.trim_start().starts_with('[');
    let key = line
        .split_once('=')
        .filter(|_| !header)
        .map(|(key, _)| key.trim().trim_matches('"').to_owned());
    let field = match (header, table, key) {
        (true, _, _) => line
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned(),
        (false, Some(table), Some(key)) => format!("{table}.{key}"),
        (false, None, Some(key)) => key,
        (false, Some(table), None) => table,
        (false, None, None) => "config".to_owned(),
    };
    invalid(&field, message).at_line(Some(line_no))
}

#[cfg(test)]
mod tests {
    use http::HeaderName;
    use http::uri::Scheme;

    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "UPSTREAM_KEY").then(|| "sk-upstream-secret".to_owned())
    }

    fn error(text: &str) -> String {
        parse(text, &env).unwrap_err().to_string()
    }

    const UPSTREAM: &str = "[upstream]\nbase_url = \"http://127.0.0.1:9000\"\n";

    #[test]
    fn a_full_file_loads() {
        let config = parse(
            r#"
            [server]
            listen = "0.0.0.0:9090"
            api_keys = ["tg-a", "tg-b"]
            shutdown_grace = "5s"
            [upstream]
            base_url = "http://127.0.0.1:9000/"
            key_env = "UPSTREAM_KEY"
            auth = "x-api-key"
            [stack]
            preset = "aggressive"
            max_concurrent_requests = 7
            [stack.circuit_breaker]
            failure_threshold = 3
            "#,
            &env,
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9090".parse().unwrap());
        assert!(config.clients.admits(b"tg-b"));
        assert!(!config.clients.admits(b"tg-c"));
        assert!(!config.clients.admits(b""));
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.routing.upstream().unwrap().prefix, "");
        assert_eq!(config.routing.upstream().unwrap().auth, Auth::XApiKey);
        assert_eq!(config.stack.max_concurrent_calls(), 7);
        let (name, value) = config.routing.upstream().unwrap().credential().unwrap();
        assert_eq!(name, "x-api-key");
        assert_eq!(value, "sk-upstream-secret");
        let debug = format!("{config:?} {value:?}");
        for secret in ["sk-upstream-secret", "tg-a", "tg-b"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn redis_is_every_groups_shared_store_and_never_holds_a_password() {
        let config = parse(
            &format!(
                "{UPSTREAM}[redis]\nurl = \"rediss://redis.internal:6380/1\"\n\
                 password_env = \"REDIS_PASSWORD\"\nlocal_share = 0.25\n"
            ),
            &env,
        )
        .unwrap();
        let redis = config.stack.redis.as_ref().unwrap();
        assert_eq!(redis.url.as_deref(), Some("rediss://redis.internal:6380/1"));
        assert_eq!(redis.local_share, 0.25);
        assert!(config.stack.rate_limit_redis().is_some());
        let leaked = error(&format!(
            "{UPSTREAM}\n[redis]\nurl = \"redis://:hunter2@redis.internal\"\n"
        ));
        assert!(
            leaked.contains("redis.url")
                && leaked.contains("line 5")
                && !leaked.contains("hunter2"),
            "{leaked}"
        );
        let twice = error(&format!(
            "{UPSTREAM}[redis]\nurl = \"redis://a\"\n[stack.redis]\nurl = \"redis://b\"\n"
        ));
        assert!(twice.contains("stack.redis"), "{twice}");
        let unknown = error(&format!(
            "{UPSTREAM}[redis]\nurl = \"redis://a\"\nshare = 1\n"
        ));
        assert!(
            unknown.contains("share") && unknown.contains("line"),
            "{unknown}"
        );
    }

    #[test]
    fn the_fleet_guides_config_loads() {
        let guide = include_str!("../../../../docs/fleet.md");
        let start = guide.find("cat > /tmp/fleet.toml <<'EOF'\n").unwrap();
        let text = &guide[start..].split_once('\n').unwrap().1;
        let text = &text[..text.find("\nEOF").unwrap()];
        let env = |name: &str| match name {
            "OPENAI_API_KEY" => Some("sk-fleet-demo".to_owned()),
            "TG_CLIENT_KEYS" => Some("tg-demo".to_owned()),
            _ => None,
        };
        let config = parse(text, &env).unwrap();
        let redis = config.stack.redis.as_ref().unwrap();
        assert_eq!(redis.url.as_deref(), Some("redis://127.0.0.1:6390"));
        assert_eq!(redis.local_share, 0.34);
        assert!(config.clients.admits(b"tg-demo"));
    }

    #[test]
    fn the_example_in_docs_loads() {
        let env = |name: &str| match name {
            "OPENAI_API_KEY" => Some("sk-example".to_owned()),
            "TOLLGATE_API_KEYS" => Some("tg-a, tg-b".to_owned()),
            _ => None,
        };
        let config = parse(include_str!("../../../../docs/tollgate.toml"), &env).unwrap();
        assert!(config.clients.admits(b"tg-b"));
        assert_eq!(config.stack.max_concurrent_calls(), 64);
        assert_eq!(
            config
                .routing
                .upstream()
                .unwrap()
                .key
                .as_ref()
                .map(|k| k.expose().to_owned())
                .as_deref(),
            Some("sk-example")
        );
    }

    #[test]
    fn defaults_need_only_the_upstream() {
        let config = parse(UPSTREAM, &env).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(!config.clients.required());
        assert!(config.routing.upstream().unwrap().credential().is_none());
        assert_eq!(config.stack, StackConfig::default());
    }

    #[test]
    fn bad_values_name_the_field_and_the_value() {
        let cases = [
            (
                format!("[server]\nlisten = \"localhost\"\n{UPSTREAM}"),
                "server.listen: \"localhost\" is not an address",
            ),
            (
                format!("[server]\nlisten = 8080\n{UPSTREAM}"),
                "server.listen (line 2): invalid type: integer `8080`, expected a string",
            ),
            (
                format!("[server]\napi_keys = [\"a\", \" \"]\n{UPSTREAM}"),
                "server.api_keys[1]: an empty key is not allowed",
            ),
            (
                format!("[server]\nshutdown_grace = \"soon\"\n{UPSTREAM}"),
                "server.shutdown_grace: \"soon\" is not a duration",
            ),
            (
                format!("[server]\nlisten_on = \"x\"\n{UPSTREAM}"),
                "server.listen_on (line 2): unknown field `listen_on`",
            ),
            ("".to_owned(), "upstream: the [upstream] table is missing"),
            (
                "[upstream]\nkey_env = \"UPSTREAM_KEY\"\n".to_owned(),
                "upstream.base_url: missing",
            ),
            (
                "[upstream]\nbase_url = \"ftp://files.example\"\n".to_owned(),
                "upstream.base_url: \"ftp://files.example\": the scheme must be http or https",
            ),
            (
                format!("{UPSTREAM}ca_file = \"ca.pem\"\n"),
                "upstream.ca_file: is only used with an https base_url, and base_url is \
                 \"http://127.0.0.1:9000\"",
            ),
            (
                "[upstream]\nbase_url = \"https://gw.internal\"\nca_file = \"\"\n".to_owned(),
                "upstream.ca_file: an empty path is not allowed",
            ),
            (
                format!("[server]\nadmin_token_env = \"NOT_SET\"\n{UPSTREAM}"),
                "server.admin_token_env: the environment variable \"NOT_SET\" is not set",
            ),
            (
                format!("[server]\nadmin_token = \" \"\n{UPSTREAM}"),
                "server.admin_token: an empty token is not allowed",
            ),
            (
                format!(
                    "[server]\nadmin_token = \"t\"\nadmin_token_env = \"UPSTREAM_KEY\"\n{UPSTREAM}"
                ),
                "server.admin_token: set admin_token or admin_token_env, not both",
            ),
            (
                "[upstream]\nbase_url = \"http://127.0.0.1:9000/v1\"\n".to_owned(),
                "upstream.base_url: \"http://127.0.0.1:9000/v1\" ends in /v1",
            ),
            (
                "[upstream]\nbase_url = \"http://user:hunter2@host\"\n".to_owned(),
                "upstream.base_url: credentials in the URL are not supported",
            ),
            (
                "[upstream]\nbase_url = \"api.openai.com\"\n".to_owned(),
                "upstream.base_url: \"api.openai.com\" needs a scheme and a host",
            ),
            (
                format!("{UPSTREAM}key_env = \"NOT_SET\"\n"),
                "upstream.key_env: the environment variable \"NOT_SET\" is not set",
            ),
            (
                format!("{UPSTREAM}auth = \"basic\"\n"),
                "upstream.auth (line 3): unknown variant `basic`, expected `bearer` or `x-api-key`",
            ),
            (
                format!("{UPSTREAM}[stack]\nmax_concurrent_requests = 0\n"),
                "stack.max_concurrent_requests (line 4): 0 is not allowed",
            ),
            (
                format!("{UPSTREAM}[stack.circuit_breaker]\nrecovery_timeout = \"later\"\n"),
                "stack.circuit_breaker.recovery_timeout (line 4): \"later\" is not a duration",
            ),
            (
                format!("{UPSTREAM}[stack]\npreset = \"reckless\"\n"),
                "stack.preset (line 4): \"reckless\" is not a preset",
            ),
            (
                format!("[server]\nsend_timeout = \"0s\"\n{UPSTREAM}"),
                "server.send_timeout: 0 is not allowed",
            ),
            (
                format!("[server]\nidle_timeout = \"soon\"\n{UPSTREAM}"),
                "server.idle_timeout: \"soon\" is not a duration",
            ),
            (
                format!(
                    "[server]\nmax_body_bytes = 100\nmax_body_bytes_in_flight = 99\n{UPSTREAM}"
                ),
                "server.max_body_bytes_in_flight: 99 is less than server.max_body_bytes (100)",
            ),
            (
                format!("[server]\nmax_connections = 0\n{UPSTREAM}"),
                "server.max_connections: 0 is not allowed",
            ),
            (
                format!("[server]\nforward_headers = [\"Authorization\"]\n{UPSTREAM}"),
                "server.forward_headers: \"Authorization\" carries a credential",
            ),
            (
                format!("[server]\nforward_headers = [\"bad header\"]\n{UPSTREAM}"),
                "server.forward_headers: \"bad header\" is not a header name",
            ),
            (
                format!(
                    "[server]\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n{UPSTREAM}"
                ),
                "metrics.listen: 127.0.0.1:9000 is server.listen too",
            ),
            (
                format!("[metrics]\nmodels = [\"ok\", \"not ok\"]\n{UPSTREAM}"),
                "metrics.models[1]: the model name is not valid",
            ),
            (
                format!("[metrics]\ntoken_env = \"NOT_SET\"\n{UPSTREAM}"),
                "metrics.token_env: the environment variable \"NOT_SET\" is not set",
            ),
        ];
        for (text, want) in cases {
            let got = error(&text);
            assert!(
                got.starts_with(want),
                "{text}\n  got:  {got}\n  want: {want}"
            );
        }
    }

    #[test]
    fn https_upstreams_take_a_ca_file_and_an_admin_token_from_the_environment() {
        let env = |name: &str| (name == "ADMIN").then(|| "adm-0123456789abcdef".to_owned());
        let config = parse(
            "[server]\nadmin_token_env = \"ADMIN\"\n[upstream]\n\
             base_url = \"https://api.openai.com\"\nca_file = \"certs/ca.pem\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(config.routing.upstream().unwrap().scheme, Scheme::HTTPS);
        assert_eq!(
            config.routing.upstream().unwrap().authority,
            "api.openai.com"
        );
        assert_eq!(
            config.routing.upstream().unwrap().ca_file.as_deref(),
            Some(std::path::Path::new("certs/ca.pem"))
        );
        let token = config.admin_token.as_ref().unwrap();
        assert_eq!(token.expose(), "adm-0123456789abcdef");
        assert!(!format!("{config:?}").contains("adm-0123456789abcdef"));
        assert!(parse(UPSTREAM, &env).unwrap().admin_token.is_none());
    }

    #[test]
    fn client_limits_default_to_safe_values_and_a_share_per_key() {
        let one_key = parse(&format!("[server]\napi_keys = [\"a\"]\n{UPSTREAM}"), &env).unwrap();
        let limits = &one_key.limits;
        assert_eq!(limits.max_body_bytes, 16 << 20);
        assert_eq!(limits.max_body_bytes_in_flight, 128 << 20);
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.body_read_timeout, Duration::from_secs(30));
        assert_eq!(
            limits.send_timeout,
            Duration::from_secs(30),
            "the stream idle limit"
        );
        assert_eq!(
            limits.max_in_flight_per_key, None,
            "one key: no share to keep"
        );
        let two_keys = parse(
            &format!(
                "[server]\napi_keys = [\"a\", \"b\"]\n{UPSTREAM}[stack]\n\
                 max_concurrent_requests = 64\n[stack.timeouts]\nidle = \"5s\"\n"
            ),
            &env,
        )
        .unwrap();
        assert_eq!(two_keys.limits.max_in_flight_per_key, Some(32));
        assert_eq!(two_keys.limits.send_timeout, Duration::from_secs(5));
        assert_eq!(two_keys.metrics.max_unlisted_models, 0);
        let cache_headers = parse(
            &format!("[server]\nclient_cache_headers = true\n{UPSTREAM}"),
            &env,
        )
        .unwrap();
        assert!(
            cache_headers
                .limits
                .forward_headers
                .allows(&HeaderName::from_static("x-tollgate-cache"))
        );
        assert!(
            !one_key
                .limits
                .forward_headers
                .allows(&HeaderName::from_static("x-tollgate-cache"))
        );
    }

    #[test]
    fn errors_never_show_a_key() {
        let text = format!("[server]\napi_keys = [\"tg-secret\", 5]\n{UPSTREAM}");
        let got = error(&text);
        assert!(got.contains("server.api_keys (line 2)"), "{got}");
        assert!(!got.contains("tg-secret"), "{got}");
    }
}
