//! Where a request goes: the one `[upstream]`, or the `[[models]]` group its `model` names,
//! each through a stack of its own, with the group's fallbacks in front. [`Routes`] is what a
//! config builds and what `SIGHUP` replaces; a group whose settings did not change keeps its
//! stack (its breakers, limits, cooldowns) across a reload.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use tollgate::budget::{BudgetConfig, BudgetLayer, RedbStore, RedisBooks};
use tollgate::cache::Tenant;
use tollgate::fallback::{FallbackLayer, Trigger};
use tollgate::pool::{Auth, Rewrite};
use tollgate::{LlmBody, LlmService, LlmStack, StackHandle};
use tollgate_core::config::RedisSettings;
use tollgate_core::{BoxError, CredentialId, Outcome, OutcomeKind, Provider, Scope};
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, Service, ServiceExt};

use super::admission::KeyShares;
use super::config::{ClientKeys, GroupAuth, ModelGroup, ProxyConfig, Routing as RoutingConfig};
use super::tenant::{TenantState, TenantStores};

/// What the gateway calls its upstreams with: a client, cloned into every group's stack.
pub(crate) trait UpstreamClient<RB>:
    Service<
        Request<Full<Bytes>>,
        Response = Response<RB>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, RB> UpstreamClient<RB> for S where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<RB>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// Everything a config decides about a request: who may call, and where it goes.
pub(crate) struct Routes {
    /// Who may call; nobody needs a key when empty.
    pub(crate) clients: ClientKeys,
    /// Each key's cache tenant (a digest prefix), by the key's index.
    pub(crate) cache_tenants: Vec<Tenant>,
    /// Each key's calls in flight.
    pub(crate) shares: Arc<KeyShares>,
    /// Each key's tenant (by the key's index), for the keys of `[[tenants]]`.
    pub(crate) tenants: Vec<Option<Arc<TenantState>>>,
    /// The budgets every route counts spend in, when there are any.
    pub(crate) books: Option<Books>,
    /// The one upstream, or the groups.
    pub(crate) routing: Routing,
}

/// The one upstream, or the model groups.
pub(crate) enum Routing {
    /// `[upstream]`: every request, whatever its model.
    Upstream(Box<Route>),
    /// `[[models]]`: by the request's `model`, in the config's order.
    Models(Vec<Route>),
}

/// One set of budgets for every route: the tenants' and `[stack]`'s, with the spend kept in
/// `server.spend_file` (or in memory).
#[derive(Clone, Debug)]
pub(crate) struct Books {
    pub(crate) layer: tollgate::Books,
    config: BudgetConfig,
}

/// Where spend is kept: the redb file every set of books writes to, across reloads.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpendFile(pub(crate) Option<Arc<RedbStore>>);

impl SpendFile {
    /// The file `config` keeps its budgets' spend in, opened (created if need be) once there
    /// are budgets; `self` when it is open already. A relative path is `config_path`'s
    /// directory's.
    pub(crate) fn for_config(
        &self,
        config: &ProxyConfig,
        config_path: &std::path::Path,
    ) -> Result<Self, String> {
        // A fleet keeps its spend in Redis.
        if self.0.is_some() || config.budget().is_none() || config.stack.redis.is_some() {
            return Ok(self.clone());
        }
        let file = config_path.parent().map_or_else(
            || config.spend_file.clone(),
            |dir| dir.join(&config.spend_file),
        );
        let store = RedbStore::open(&file)
            .map_err(|e| format!("server.spend_file: cannot open {}: {e}", file.display()))?;
        tracing::info!(file = %file.display(), "spend is kept in this file across restarts");
        Ok(Self(Some(Arc::new(store))))
    }
}

/// One destination: a stack, and how a request is pointed at it.
pub(crate) struct Route {
    /// The stack with the group's fallbacks in front.
    pub(crate) llm: LlmService,
    /// The stack alone (another group's fallback goes here).
    own: LlmService,
    /// What its layers show.
    pub(crate) handle: StackHandle,
    /// Where its requests are addressed before the stack (a pool moves them to a member).
    pub(crate) target: Target,
    /// Its members' scopes, for the health reports.
    pub(crate) members: Vec<(Arc<str>, Scope)>,
    /// The group's settings; `None` for `[upstream]`.
    pub(crate) group: Option<ModelGroup>,
}

/// How a request is addressed before it enters a route's stack.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// A path prefix, without a trailing `/` (`""` for none).
    pub(crate) prefix: String,
    /// The gateway's key for `[upstream]`, marked sensitive.
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
    /// A passthrough group: how the client's key is sent, and its deployment's rewrite
    /// (model, Azure path).
    pub(crate) passthrough: Option<(Auth, Rewrite)>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("clients", &self.clients)
            .field("routes", &self.names())
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The group's name (`None` for `[upstream]`).
    pub(crate) fn name(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.name.as_str())
    }
}

impl Routes {
    /// The routes `config` describes over `client`, reusing `previous`'s stack for each group
    /// whose settings are unchanged. Keys and Redis URLs are read through `env`.
    pub(crate) async fn build<S, RB>(
        config: &ProxyConfig,
        client: &S,
        previous: Option<&Self>,
        spend: &SpendFile,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Self, String>
    where
        S: UpstreamClient<RB>,
        RB: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
    {
        // The books carry on while the budgets are the same; new budgets read what the file
        // kept.
        let previous_books = previous.and_then(|p| p.books.as_ref());
        let books = match (config.budget(), previous_books) {
            (None, _) => None,
            (Some(wanted), Some(books)) if books.config == wanted => Some(books.clone()),
            (Some(wanted), _) => {
                let layer: tollgate::Books = match (&config.stack.redis, &spend.0) {
                    (Some(redis), _) => fleet_books(&wanted, redis, env).await?,
                    (None, Some(file)) => BudgetLayer::configured_with(
                        &wanted,
                        file.clone(),
                        tollgate_core::TokioClock,
                    )
                    .map_err(budgets_error)?
                    .into(),
                    (None, None) => BudgetLayer::configured(&wanted)
                        .map_err(budgets_error)?
                        .into(),
                };
                Some(Books {
                    layer,
                    config: wanted,
                })
            }
        };
        let same_books = match (&books, previous_books) {
            (None, None) => true,
            (Some(new), Some(old)) => new.config == old.config,
            _ => false,
        };
        let budget = books.as_ref().map(|b| b.layer.clone());
        let routing = match &config.routing {
            RoutingConfig::Upstream(upstream) => {
                let stack = connect(&config.stack, env, "stack", budget.as_ref()).await?;
                let (llm, handle) = stack.service(client.clone());
                let members = upstream
                    .key
                    .as_ref()
                    .map(|key| {
                        let scope = Scope::new(Provider::OpenAi).with_credential(Some(
                            CredentialId::from_secret(key.expose().as_bytes()),
                        ));
                        vec![(Arc::from("upstream"), scope)]
                    })
                    .unwrap_or_default();
                Routing::Upstream(Box::new(Route {
                    own: llm.clone(),
                    llm,
                    handle,
                    target: Target {
                        scheme: upstream.scheme.clone(),
                        authority: upstream.authority.clone(),
                        prefix: upstream.prefix.clone(),
                        credential: upstream.credential(),
                        passthrough: None,
                    },
                    members,
                    group: None,
                }))
            }
            RoutingConfig::Models(groups) => {
                let old: HashMap<&str, &Route> = match previous.map(|p| &p.routing) {
                    Some(Routing::Models(routes)) => {
                        routes.iter().filter_map(|r| Some((r.name()?, r))).collect()
                    }
                    _ => HashMap::new(),
                };
                let mut routes = Vec::with_capacity(groups.len());
                for (i, group) in groups.iter().enumerate() {
                    let route = match old.get(group.name.as_str()) {
                        Some(old) if same_books && old.group.as_ref() == Some(group) => Route {
                            llm: old.own.clone(),
                            own: old.own.clone(),
                            handle: old.handle.clone(),
                            target: group_target(group)?,
                            members: old.members.clone(),
                            group: Some(group.clone()),
                        },
                        _ => group_route(group, client, env, i, budget.as_ref()).await?,
                    };
                    routes.push(route);
                }
                compose_fallbacks(&mut routes);
                Routing::Models(routes)
            }
        };
        // A tenant whose settings did not change keeps its limits and counts.
        let kept: Vec<&Arc<TenantState>> = previous
            .iter()
            .flat_map(|p| p.tenants.iter().flatten())
            .collect();
        let anonymous = config.clients.len() - config.tenants.len();
        // A fleet holds each tenant to its limits together, through Redis (a connection made
        // when a tenant with limits is new).
        let new_limits = config
            .tenants
            .iter()
            .any(|t| t.limited() && !kept.iter().any(|k| k.tenant == *t));
        let fleet = match &config.stack.redis {
            Some(redis) if new_limits => {
                let url = redis
                    .resolve(env)
                    .map_err(|e| e.within("redis").to_string())?;
                let stores = TenantStores::fleet(&url, redis, &config.tenants)
                    .await
                    .map_err(|e| {
                        format!(
                            "redis: cannot keep the tenants' limits in the Redis server at {}: {e}",
                            redis.describe()
                        )
                    })?;
                Some(stores)
            }
            _ => None,
        };
        let tenants = (0..anonymous)
            .map(|_| None)
            .chain(config.tenants.iter().map(|tenant| {
                Some(kept.iter().find(|t| t.tenant == *tenant).map_or_else(
                    || Arc::new(TenantState::new(tenant.clone(), fleet.as_ref())),
                    |t| (*t).clone(),
                ))
            }))
            .collect();
        Ok(Self {
            // A tenant's calls are its own by name (its cached answers and its budgets); the
            // other keys' by a digest prefix.
            cache_tenants: (0..config.clients.len())
                .map(|i| match i.checked_sub(anonymous) {
                    Some(t) => Tenant::new(config.tenants[t].name.as_str()),
                    None => Tenant::new(config.clients.tenant(i)),
                })
                .collect(),
            books,
            shares: Arc::new(KeyShares::new(&config.limits.max_in_flight)),
            tenants,
            clients: config.clients.clone(),
            routing,
        })
    }

    /// The route for a request naming `model` (any model with `[upstream]`).
    pub(crate) fn route(&self, model: Option<&str>) -> Option<&Route> {
        match &self.routing {
            Routing::Upstream(route) => Some(&**route),
            Routing::Models(routes) => {
                let model = model?;
                routes.iter().find(|r| r.name() == Some(model))
            }
        }
    }

    /// Every route.
    pub(crate) fn all(&self) -> &[Route] {
        match &self.routing {
            Routing::Upstream(route) => std::slice::from_ref(&**route),
            Routing::Models(routes) => routes,
        }
    }

    /// The groups' names, comma-separated (empty with `[upstream]`).
    pub(crate) fn names(&self) -> String {
        self.all()
            .iter()
            .filter_map(Route::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A budget setting that is not usable, under `budgets`.
fn budgets_error(error: tollgate::ConfigError) -> String {
    error.within("budgets").to_string()
}

/// The books of a fleet, in `redis`: every replica's calls reserve there, so none overshoots.
async fn fleet_books(
    wanted: &BudgetConfig,
    redis: &RedisSettings,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<tollgate::Books, String> {
    // Checked before connecting: a bad setting is the error, not the server.
    wanted.validate().map_err(budgets_error)?;
    let url = redis
        .resolve(env)
        .map_err(|e| e.within("redis").to_string())?;
    let books = RedisBooks::connect(&url)
        .await
        .map_err(|e| {
            format!(
                "redis: cannot keep the budgets in the Redis server at {}: {e}",
                redis.describe()
            )
        })?
        .with_local_share(redis.local_share)
        .with_fail_closed(!redis.fail_open)
        .with_command_timeout(redis.command_timeout);
    Ok(BudgetLayer::configured_with_redis(wanted, books)
        .map_err(budgets_error)?
        .into())
}

/// The stack `config` describes, connected to what it keeps outside this process; an error
/// names its field under `section`. Given `budget`, the gateway's books, its calls are counted
/// there instead of in books of its own.
async fn connect(
    config: &tollgate::StackConfig,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    section: &str,
    budget: Option<&tollgate::Books>,
) -> Result<LlmStack, String> {
    let mut config = config.clone();
    if budget.is_some() {
        config.budget = None;
    }
    let connected = LlmStack::connect_with_env(&config, env)
        .await
        .map(|stack| match budget {
            Some(books) => stack.with_budget(books.clone()),
            None => stack,
        });
    connected.map_err(|e| match e.downcast_ref::<tollgate::ConfigError>() {
        Some(config) => config.clone().within(section).to_string(),
        None => {
            let cause = std::error::Error::source(&*e)
                .map(|source| format!(": {source}"))
                .unwrap_or_default();
            format!("{section}: {e}{cause}")
        }
    })
}

/// A group's stack over `client`, and its members' scopes.
async fn group_route<S, RB>(
    group: &ModelGroup,
    client: &S,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    index: usize,
    budget: Option<&tollgate::Books>,
) -> Result<Route, String>
where
    S: UpstreamClient<RB>,
    RB: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    let stack = connect(&group.stack, env, &format!("models[{index}]"), budget).await?;
    let (own, handle) = stack.service(client.clone());
    let members = match &group.stack.pool {
        Some(pool) => pool
            .members(env)
            .map_err(|e| e.within(&format!("models[{index}]")).to_string())?
            .into_iter()
            .map(|m| {
                let scope = Scope::new(m.settings.provider.unwrap_or(Provider::OpenAi))
                    .with_credential(m.credential.clone())
                    .with_model(m.settings.model.as_deref().map(Into::into));
                (Arc::from(m.member.name()), scope)
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Route {
        llm: own.clone(),
        own,
        handle,
        target: group_target(group)?,
        members,
        group: Some(group.clone()),
    })
}

/// Where a group's requests are addressed: its first deployment (a pool moves each to the
/// member it picks); a passthrough group's one deployment, with the client's key.
fn group_target(group: &ModelGroup) -> Result<Target, String> {
    let first = group
        .passthrough
        .as_ref()
        .or_else(|| group.stack.pool.as_ref().and_then(|p| p.members.first()))
        .ok_or_else(|| format!("models: {:?} has no deployment", group.name))?;
    let base = first
        .base_url
        .as_deref()
        .unwrap_or("https://api.openai.com");
    let uri: Uri = base
        .parse()
        .map_err(|e| format!("{:?}: {base:?} is not a URL ({e})", group.name))?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err(format!(
            "{:?}: {base:?} needs a scheme and a host",
            group.name
        ));
    };
    let passthrough = (group.auth == GroupAuth::Passthrough).then(|| {
        let provider = first.provider.unwrap_or(Provider::OpenAi);
        let auth = match provider {
            Provider::Anthropic => Auth::XApiKey,
            Provider::AzureOpenAi => Auth::ApiKey,
            Provider::Gemini => Auth::GoogApiKey,
            _ => Auth::Bearer,
        };
        let mut rewrite = Rewrite::default().provider(provider);
        if let Some(model) = &first.model {
            rewrite = rewrite.model(model);
        }
        if let (Some(deployment), Some(version)) = (&first.deployment, &first.api_version) {
            rewrite = rewrite.azure(deployment, version);
        }
        (auth, rewrite)
    });
    Ok(Target {
        scheme,
        authority,
        prefix: uri.path().trim_end_matches('/').to_owned(),
        credential: None,
        passthrough,
    })
}

/// The groups a request to `start` may end at, in the order tried: `start`, then each of its
/// fallbacks followed by that group's own, each once.
fn chain(routes: &[Route], start: usize) -> Vec<usize> {
    fn walk(routes: &[Route], at: usize, order: &mut Vec<usize>) {
        if order.contains(&at) {
            return;
        }
        order.push(at);
        let Some(group) = &routes[at].group else {
            return;
        };
        for name in &group.fallbacks {
            if let Some(next) = routes.iter().position(|r| r.name() == Some(name)) {
                walk(routes, next, order);
            }
        }
    }
    let mut order = Vec::new();
    walk(routes, start, &mut order);
    order
}

/// Puts each group's fallbacks in front of its stack: a call that fails as the group's
/// `fallback_on` says (or over its context window, when a group further down the chain has a
/// larger one) goes on to the next group of its chain.
fn compose_fallbacks(routes: &mut [Route]) {
    let composed: Vec<LlmService> = (0..routes.len())
        .map(|start| {
            let order = chain(routes, start);
            let mut service = routes[*order.last().expect("the group itself")].own.clone();
            for (at, pair) in order.windows(2).enumerate().rev() {
                let from = &routes[pair[0]];
                let from_group = from.group.as_ref().expect("a group");
                let on = from_group.fallback_on;
                // A prompt over this group's window moves on when a group further down the
                // chain has a larger one (those in between pass it on the same way).
                let larger = from_group.context_window.is_some_and(|own| {
                    order[at + 1..].iter().any(|&later| {
                        routes[later]
                            .group
                            .as_ref()
                            .and_then(|g| g.context_window)
                            .is_some_and(|w| w > own)
                    })
                });
                let policy = move |trigger: Trigger, outcome: &Outcome| {
                    if outcome.kind == OutcomeKind::ContextLengthExceeded {
                        return larger;
                    }
                    on.contains(trigger)
                };
                let layer = FallbackLayer::new(service).with_policy(policy);
                service = BoxCloneSyncService::new(
                    layer
                        .layer(from.own.clone())
                        .map_response(boxed)
                        .map_err(Into::into),
                );
            }
            service
        })
        .collect();
    for (route, llm) in routes.iter_mut().zip(composed) {
        route.llm = llm;
    }
}

fn boxed<B>(response: Response<B>) -> Response<LlmBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

#[cfg(test)]
mod tests;
