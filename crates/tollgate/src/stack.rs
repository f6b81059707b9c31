//! [`LlmStack`]: the standard stack over any client.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tollgate_batch::{BatchLayer, EmbeddingsCodec};
use tollgate_budget::BudgetLayer;

use crate::books::Books;
use tollgate_cache::{CacheHandle, CacheLayer};
use tollgate_circuit::{CircuitBreakerLayer, CircuitState};
use tollgate_concurrency::ConcurrencyConfig;
use tollgate_concurrency::ConcurrencyLimitLayer;
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_fallback::{FallbackConfig, FallbackLayer};
use tollgate_overload::{OverloadHandle, OverloadLayer};
use tollgate_pool::{ConfiguredMember, Pool};
use tollgate_ratelimit::{QuotaTable, Quotas, RateLimitLayer, ScopeMatch};
use tollgate_retry::RetryLayer;
use tollgate_timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, Service, ServiceBuilder, ServiceExt};

use crate::config::{ConfigError, StackConfig};
use crate::handle::StackHandle;
use crate::optional::Optional;
use crate::preset::Preset;
#[cfg(any(
    feature = "ratelimit-redis",
    feature = "cache-redis",
    feature = "budget-redis",
    feature = "circuit-redis",
    feature = "pool-redis"
))]
use crate::redis::RedisUnavailable;
use crate::redis::redis_field;

/// A response body from the stack.
pub type LlmBody = UnsyncBoxBody<Bytes, BoxError>;

/// The stack as one service: `Request<Full<Bytes>>` in, a response with its body out.
pub type LlmService = BoxCloneSyncService<Request<Full<Bytes>>, Response<LlmBody>, BoxError>;

/// Boxes a response body.
fn boxed<B>(response: Response<B>) -> Response<LlmBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

/// The standard stack, outermost first, every layer optional:
/// Fallback → Annotate → Cache → Budget → Batch (embeddings) → Retry → Pool → per member:
/// CircuitBreaker → Overload (adaptive limit, throttle) → RateLimit → ConcurrencyLimit →
/// Timeout (first token, idle, total) → Classify → your client. Without a pool, the member
/// layers sit right under Retry.
///
/// ```
/// use tollgate::{LlmStack, Preset};
///
/// # fn wrap<S>(client: S) where
/// #     S: tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>,
/// #         Response = http::Response<http_body_util::Full<bytes::Bytes>>>
/// #         + Clone + Send + Sync + 'static,
/// #     S::Future: Send, S::Error: Into<tollgate_core::BoxError> {
/// let (llm, handle) = LlmStack::preset(Preset::Balanced).service(client);
/// // `llm` is a tower service; `handle.health()` reports every scope's breaker and limit.
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LlmStack {
    config: StackConfig,
    /// The pool's members, their keys read from the environment (`pool.members`).
    members: Option<Vec<ConfiguredMember>>,
    /// What answers when the upstream fails as `fallback.triggers` says (none: the cache's
    /// stale entries).
    fallback: Option<LlmService>,
    /// Books shared with other stacks (or kept in Redis), in place of `[budget]`'s own.
    budget: Option<Books>,
    /// The fleet's shared rate limits, when `rate_limit.redis` names them.
    #[cfg(feature = "ratelimit-redis")]
    redis: Option<tollgate_ratelimit::RedisStore>,
    /// The cache's second level, when `cache.redis` names it.
    #[cfg(feature = "cache-redis")]
    cache_redis: Option<tollgate_cache::redis::RedisStore>,
    /// The fleet's breakers, when `[redis]` is set.
    #[cfg(feature = "circuit-redis")]
    circuit_redis: Option<tollgate_circuit::RedisBreakerState>,
    /// The fleet's pool cooldowns, when `[redis]` is set with a pool.
    #[cfg(feature = "pool-redis")]
    pool_redis: Option<tollgate_pool::RedisPoolState>,
}

impl LlmStack {
    /// The stack with `config`; each warning of the config is logged.
    ///
    /// # Errors
    ///
    /// A setting that is not usable.
    /// A config whose rate limits or cache live in Redis (`[redis]`) needs a connection:
    /// build it with [`connect`](Self::connect).
    pub fn new(config: &StackConfig) -> Result<Self, ConfigError> {
        Self::new_with_env(config, &|name| std::env::var(name).ok())
    }

    /// As [`new`](Self::new), reading the pool's keys through `env` instead of the process's
    /// environment.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn new_with_env(
        config: &StackConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if let Some(field) = redis_field(config) {
            return Err(ConfigError::invalid(
                field,
                "is kept in Redis: build the stack with LlmStack::connect(&config).await",
            ));
        }
        Self::checked(config, env)
    }

    fn checked(
        config: &StackConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        for warning in config.warnings() {
            tracing::warn!(field = warning.field(), "{}", warning.message());
        }
        let members = config
            .pool
            .as_ref()
            .map(|pool| pool.members(env).map_err(|e| e.within("pool")))
            .transpose()?;
        if config.fallback.is_some() {
            stale_possible(config)?;
        }
        Ok(Self {
            config: config.clone(),
            members,
            fallback: None,
            budget: None,
            #[cfg(feature = "ratelimit-redis")]
            redis: None,
            #[cfg(feature = "cache-redis")]
            cache_redis: None,
            #[cfg(feature = "circuit-redis")]
            circuit_redis: None,
            #[cfg(feature = "pool-redis")]
            pool_redis: None,
        })
    }

    /// The stack with `config`, connected to what it names outside this process: the Redis
    /// server of `[redis]` (or of a section's own `redis`), where every replica keeps its rate
    /// limits (feature `ratelimit-redis`) and the cache's second level (`cache-redis`).
    ///
    /// # Errors
    ///
    /// A setting that is not usable, the variable unset, or Redis not answering (its error
    /// as the source).
    pub async fn connect(config: &StackConfig) -> Result<Self, BoxError> {
        Self::connect_with_env(config, &|name| std::env::var(name).ok()).await
    }

    /// As [`connect`](Self::connect), reading the environment through `env`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with_env(
        config: &StackConfig,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Self, BoxError> {
        #[cfg_attr(
            not(any(
                feature = "ratelimit-redis",
                feature = "cache-redis",
                feature = "budget-redis",
                feature = "circuit-redis",
                feature = "pool-redis"
            )),
            allow(unused_mut)
        )]
        let mut stack = Self::checked(config, env)?;
        // A build without a Redis feature refuses such a section when the config is read.
        #[cfg(feature = "ratelimit-redis")]
        if let Some(settings) = config.rate_limit_redis() {
            let field = config.redis_field("rate_limit");
            let url = settings.resolve(env).map_err(|e| e.within(&field))?;
            let store = tollgate_ratelimit::RedisStore::connect(&url, stack.quota_table())
                .await
                .map_err(|e| RedisUnavailable::new(field, settings, e))?
                .with_max_scopes(config.max_scopes)
                .with_local_share(settings.local_share)
                .with_fail_open(settings.fail_open)
                .with_command_timeout(settings.command_timeout);
            stack.redis = Some(store);
        }
        #[cfg(feature = "budget-redis")]
        if let Some(settings) = config.budget_redis() {
            let url = settings.resolve(env).map_err(|e| e.within("redis"))?;
            let books = tollgate_budget::RedisBooks::connect(&url)
                .await
                .map_err(|e| RedisUnavailable::new("redis".to_owned(), settings, e))?
                .with_local_share(settings.local_share)
                .with_fail_closed(!settings.fail_open)
                .with_command_timeout(settings.command_timeout);
            let budget = config.budget.as_ref().expect("budget_redis needs [budget]");
            let layer = BudgetLayer::configured_with_redis(budget, books)
                .map_err(|e| e.within("budget"))?;
            stack.budget = Some(Books::Fleet(layer));
        }
        #[cfg(feature = "circuit-redis")]
        if let Some(settings) = config.circuit_redis() {
            let url = settings.resolve(env).map_err(|e| e.within("redis"))?;
            let state = tollgate_circuit::RedisBreakerState::connect(&url)
                .await
                .map_err(|e| RedisUnavailable::new("redis".to_owned(), settings, e))?
                .with_command_timeout(settings.command_timeout);
            stack.circuit_redis = Some(state);
        }
        #[cfg(feature = "pool-redis")]
        if let Some(settings) = config.pool_redis() {
            let url = settings.resolve(env).map_err(|e| e.within("redis"))?;
            let state = tollgate_pool::RedisPoolState::connect(&url)
                .await
                .map_err(|e| RedisUnavailable::new("redis".to_owned(), settings, e))?
                .with_command_timeout(settings.command_timeout);
            stack.pool_redis = Some(state);
        }
        #[cfg(feature = "cache-redis")]
        if let Some(settings) = config.cache_redis() {
            let field = config.redis_field("cache");
            let url = settings.resolve(env).map_err(|e| e.within(&field))?;
            let store = tollgate_cache::redis::RedisStore::connect(&url)
                .await
                .map_err(|e| RedisUnavailable::new(field, settings, e))?
                .with_command_timeout(settings.command_timeout);
            stack.cache_redis = Some(store);
        }
        Ok(stack)
    }

    /// The stack as a preset sets it.
    pub fn preset(preset: Preset) -> Self {
        Self {
            config: StackConfig::preset(preset),
            members: None,
            fallback: None,
            budget: None,
            #[cfg(feature = "ratelimit-redis")]
            redis: None,
            #[cfg(feature = "cache-redis")]
            cache_redis: None,
            #[cfg(feature = "circuit-redis")]
            circuit_redis: None,
            #[cfg(feature = "pool-redis")]
            pool_redis: None,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// The stack answering from `fallback` (a smaller model, a rules engine, canned answers)
    /// when the upstream fails as `config` says: put in front of the cache, after Annotate.
    /// Without it, a `[fallback]` section answers from the cache's stale entries.
    ///
    /// ```
    /// use tollgate::fallback::FallbackConfig;
    /// use tollgate::{LlmService, LlmStack, Preset};
    ///
    /// # fn wrap(canned: LlmService) {
    /// let stack = LlmStack::preset(Preset::Balanced).with_fallback(canned, FallbackConfig::default());
    /// # let _ = stack; }
    /// ```
    #[must_use]
    pub fn with_fallback(mut self, fallback: LlmService, config: FallbackConfig) -> Self {
        self.config.fallback = Some(config);
        self.fallback = Some(fallback);
        self
    }

    /// The stack counting spend in `budget`'s books instead of building its own from
    /// `[budget]`: several stacks (a gateway's model groups, say) given clones of one layer
    /// share one set of budgets, and a layer built with
    /// [`BudgetLayer::configured_with`](tollgate_budget::BudgetLayer::configured_with) keeps
    /// its spend in a store of your choice (a redb file, so a restart keeps the month's spend).
    #[must_use]
    pub fn with_budget(mut self, budget: impl Into<Books>) -> Self {
        self.budget = Some(budget.into());
        self
    }

    /// The durable deferred queue `[deferred]` describes, sending through `llm` (this stack's
    /// service, so its jobs pass every limit): requests are written to its `store`, sent in
    /// bulk every `interval` (through a provider's Batch API once you add one with
    /// `batch_api`), and each is sent alone once it has waited `max_age`. `None` without a
    /// `[deferred]` section. Open it with `.open().await`.
    ///
    /// The queue never writes a key to disk: `llm` adds it when a job is sent (a pool's
    /// members add their own; otherwise a layer that sets the header).
    ///
    /// # Errors
    ///
    /// `[deferred]` has no `store`.
    #[cfg(feature = "deferred")]
    pub fn deferred_queue(
        &self,
        llm: LlmService,
    ) -> Option<Result<tollgate_deferred::DeferredQueueBuilder, ConfigError>> {
        let config = self.config.deferred.clone()?;
        Some(
            tollgate_deferred::DeferredQueue::configured(config, tollgate_deferred::transport(llm))
                .map_err(|e| e.within("deferred")),
        )
    }

    /// The stack with `change` made to its settings: a layer's config replaced, or a layer
    /// left out (`None`).
    ///
    /// ```
    /// use tollgate::{LlmStack, Preset};
    /// use tollgate::retry::RetryConfig;
    ///
    /// let stack = LlmStack::preset(Preset::Balanced)
    ///     .configure(|c| {
    ///         c.retry = Some(RetryConfig { max_attempts: 3, ..RetryConfig::default() });
    ///         c.cache = None;
    ///     })
    ///     .unwrap();
    /// assert!(stack.config().cache.is_none());
    /// ```
    ///
    /// # Errors
    ///
    /// A setting that is not usable.
    ///
    /// A pool whose settings changed has its keys read again, from the process's environment;
    /// a Redis section the stack was not connected to is refused (connect with
    /// [`connect`](Self::connect)).
    pub fn configure(mut self, change: impl FnOnce(&mut StackConfig)) -> Result<Self, ConfigError> {
        let pool = self.config.pool.clone();
        change(&mut self.config);
        self.config.validate()?;
        if let Some(field) = self.unconnected() {
            return Err(ConfigError::invalid(
                field,
                "is kept in Redis, and this stack is not connected to it: build it with \
                 LlmStack::connect(&config).await",
            ));
        }
        if self.config.fallback.is_some() && self.fallback.is_none() {
            stale_possible(&self.config)?;
        }
        if self.config.pool != pool {
            self.members = self
                .config
                .pool
                .as_ref()
                .map(|pool| {
                    pool.members(&|name| std::env::var(name).ok())
                        .map_err(|e| e.within("pool"))
                })
                .transpose()?;
        }
        Ok(self)
    }

    /// A section kept in Redis that this stack has no connection for.
    fn unconnected(&self) -> Option<String> {
        let c = &self.config;
        #[cfg(feature = "ratelimit-redis")]
        if c.rate_limit_redis().is_some() && self.redis.is_none() {
            return Some(c.redis_field("rate_limit"));
        }
        #[cfg(feature = "cache-redis")]
        if c.cache_redis().is_some() && self.cache_redis.is_none() {
            return Some(c.redis_field("cache"));
        }
        #[cfg(feature = "pool-redis")]
        if c.pool_redis().is_some() && self.pool_redis.is_none() {
            return Some("redis".to_owned());
        }
        #[cfg(feature = "circuit-redis")]
        if c.circuit_redis().is_some() && self.circuit_redis.is_none() {
            return Some("redis".to_owned());
        }
        #[cfg(feature = "budget-redis")]
        if c.budget_redis().is_some() && !matches!(self.budget, Some(Books::Fleet(_))) {
            return Some("redis".to_owned());
        }
        let _ = c;
        None
    }

    /// The stack over `client`. With a pool (`pool.members`), each member is `client`
    /// pointed at its host with its key, behind its own breaker, adaptive limit, rate limits,
    /// concurrency limit and timeouts; retries go through the pool, so a retry can move to a
    /// healthier member.
    pub fn service<S, RB>(&self, client: S) -> (LlmService, StackHandle)
    where
        S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        RB: http_body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let c = &self.config;
        let circuit = c.circuit_breaker.as_ref().map(|config| {
            let mut config = config.clone();
            if let Some(seed) = c.seed {
                config.seed = seed;
            }
            let layer = CircuitBreakerLayer::with_max_scopes(config, c.max_scopes).expect(CHECKED);
            // The fleet's breakers, before the handle is taken (the circuits are rebuilt).
            #[cfg(feature = "circuit-redis")]
            let layer = match &self.circuit_redis {
                Some(state) => layer.with_redis(state.clone()),
                None => layer,
            };
            layer
        });
        let circuit_handle = circuit.as_ref().map(CircuitBreakerLayer::handle);
        let overload = c.overload.as_ref().map(|config| {
            let mut config = config.clone();
            // The adaptive limit of a scope never goes past the concurrency limit.
            if let Some(concurrency) = &c.concurrency {
                config.max_limit = config.max_limit.min(concurrency.max_in_flight);
            }
            config.min_limit = config.min_limit.min(config.max_limit);
            config.seed = config.seed.or(c.seed);
            let layer = OverloadLayer::configured(&config)
                .expect(CHECKED)
                .with_max_scopes(c.max_scopes);
            match &circuit_handle {
                Some(probe) => {
                    let probe = probe.clone();
                    layer
                        .with_breaker_probe(move |scope| probe.state(scope) != CircuitState::Closed)
                }
                None => layer,
            }
        });
        let overload_handle = overload.as_ref().map(OverloadLayer::handle);
        let table = self.quota_table();
        let memory = c
            .rate_limit
            .as_ref()
            .filter(|_| c.rate_limit_redis().is_none())
            .map(|config| {
                let store =
                    tollgate_ratelimit::MemoryStore::new(table).with_max_scopes(c.max_scopes);
                config.apply(RateLimitLayer::from_store(store))
            });
        let rate_limits = memory.as_ref().map(RateLimitLayer::handle);
        // One layer, in memory or (for a fleet) in Redis: the two answer alike, so choosing
        // costs a branch, not another layer.
        #[cfg(feature = "ratelimit-redis")]
        let rate_limit = memory.map(tower::util::Either::Left).or_else(|| {
            self.redis
                .as_ref()
                .zip(c.rate_limit.as_ref())
                .map(|(store, config)| {
                    tower::util::Either::Right(
                        config.apply(RateLimitLayer::from_store(store.clone())),
                    )
                })
        });
        #[cfg(not(feature = "ratelimit-redis"))]
        let rate_limit = memory;
        let timeouts = c
            .timeouts
            .as_ref()
            .map(|config| TimeoutLayer::new(*config).expect(CHECKED));
        let outer = self.outer_layers(overload_handle.as_ref());
        // Annotate → Cache → Budget → Batch → Retry over `$inner`, boxed, with the fallback
        // in front.
        macro_rules! outer {
            ($inner:expr, $cache:expr, $batch:expr) => {
                finish(
                    ServiceBuilder::new()
                        .layer(AnnotateLayer::new())
                        .layer($cache)
                        .layer(same_body(outer.budget.clone()))
                        .layer($batch)
                        .layer(same_body(outer.retry.clone()))
                        .service($inner),
                    outer.fallback.clone(),
                )
            };
        }
        // The member layers over `client`, directly or through the pool.
        macro_rules! route {
            ($member:expr, $cache:expr, $batch:expr) => {{
                let member = $member;
                match &self.members {
                    None => (
                        outer!(member(c.concurrency.as_ref(), client), $cache, $batch),
                        None,
                    ),
                    Some(members) => {
                        let pool = self.pool(members, &member, &client);
                        let handle = pool.handle();
                        (outer!(pool, $cache, $batch), Some(handle))
                    }
                }
            }};
        }
        // Every preset has each layer whose body is its own; built without the wrapper that
        // leaves a layer out, such a stack costs what the layers cost, nothing more.
        let (service, pool) = match (
            &overload,
            &timeouts,
            c.concurrency.is_some(),
            &outer.cache,
            &outer.batch,
        ) {
            (Some(overload), Some(timeouts), true, Some(cache), Some(batch)) => route!(
                |concurrency: Option<&ConcurrencyConfig>, client: S| {
                    let concurrency = concurrency.expect("the concurrency limit is configured");
                    ServiceBuilder::new()
                        .layer(same_body(circuit.clone()))
                        .layer(overload.clone())
                        .layer(same_body(rate_limit.clone()))
                        .layer(ConcurrencyLimitLayer::configured(concurrency).expect(CHECKED))
                        .layer(timeouts.clone())
                        .layer(ClassifyLayer::new())
                        .service(client)
                },
                cache.clone(),
                batch.clone()
            ),
            _ => route!(
                |concurrency: Option<&ConcurrencyConfig>, client: S| {
                    ServiceBuilder::new()
                        .layer(same_body(circuit.clone()))
                        .layer(Optional(overload.clone()))
                        .layer(same_body(rate_limit.clone()))
                        .layer(Optional(concurrency.map(|config| {
                            ConcurrencyLimitLayer::configured(config).expect(CHECKED)
                        })))
                        .layer(Optional(timeouts.clone()))
                        .layer(ClassifyLayer::new())
                        .service(client)
                },
                Optional(outer.cache.clone()),
                Optional(outer.batch.clone())
            ),
        };
        let cache = outer.cache_handle;
        (
            service,
            StackHandle {
                budget: outer.budget,
                circuit: circuit_handle,
                overload: overload_handle,
                cache,
                rate_limits,
                pool,
                per_model_limits: c.rate_limit.as_ref().is_none_or(|r| r.per_model),
            },
        )
    }

    /// The quotas of every scope: the configured ones, each pool member's own first.
    fn quota_table(&self) -> QuotaTable {
        let Some(config) = &self.config.rate_limit else {
            return QuotaTable::default();
        };
        let own = self.members.iter().flatten().filter_map(|m| {
            let settings = &m.settings;
            let quotas = Quotas {
                requests_per_minute: settings.requests_per_minute,
                tokens_per_minute: settings.tokens_per_minute,
                input_tokens_per_minute: settings.input_tokens_per_minute,
                output_tokens_per_minute: settings.output_tokens_per_minute,
                ..config.quotas
            };
            let credential = m.credential.as_ref()?;
            let own = settings.requests_per_minute.is_some()
                || settings.tokens_per_minute.is_some()
                || settings.input_tokens_per_minute.is_some()
                || settings.output_tokens_per_minute.is_some();
            own.then(|| {
                (
                    ScopeMatch::any().with_credential(credential.as_str()),
                    quotas,
                )
            })
        });
        config.table_with(own)
    }

    /// The pool of `members`, each `member` over `client` with its own concurrency limit.
    fn pool<S: Clone, M>(
        &self,
        members: &[ConfiguredMember],
        member: &impl Fn(Option<&ConcurrencyConfig>, S) -> M,
        client: &S,
    ) -> Pool<M> {
        let c = &self.config;
        let pool_config = c
            .pool
            .as_ref()
            .expect("members come from the pool's config");
        let mut builder = Pool::builder();
        for configured in members {
            let concurrency = c.concurrency.as_ref().map(|config| ConcurrencyConfig {
                max_in_flight: configured
                    .settings
                    .max_concurrent
                    .unwrap_or(config.max_in_flight),
                ..config.clone()
            });
            builder = builder.member(
                configured.member.clone(),
                member(concurrency.as_ref(), client.clone()),
            );
        }
        // A fleet's members are cooled down on every replica at once (keyed by name and key
        // fingerprint, so stacks with different members can share one Redis).
        #[cfg(feature = "pool-redis")]
        let builder = match &self.pool_redis {
            Some(state) => builder.with_shared(state.clone()),
            None => builder,
        };
        pool_config.apply(builder).build()
    }

    /// The layers above the member layers (or the pool).
    fn outer_layers(&self, overload: Option<&OverloadHandle>) -> Outer {
        let c = &self.config;
        let retry = c.retry.as_ref().map(|config| {
            let mut config = config.clone();
            config.seed = config.seed.or(c.seed);
            RetryLayer::configured(&config).expect(CHECKED)
        });
        let batch = c.batch.as_ref().map(|config| {
            let layer = BatchLayer::with_config(EmbeddingsCodec, config.clone());
            match overload {
                Some(signal) => {
                    let signal = signal.clone();
                    layer.with_size_signal(move |scope, max| {
                        u32::try_from(signal.recommended_batch_size(scope, max as usize))
                            .unwrap_or(max)
                    })
                }
                None => layer,
            }
        });
        let cache = c.cache.as_ref().map(|config| {
            let layer = CacheLayer::new(config.clone()).expect(CHECKED);
            #[cfg(feature = "cache-redis")]
            let layer = match &self.cache_redis {
                Some(store) => layer.with_second_level(store.clone()),
                None => layer,
            };
            layer
        });
        let cache_handle = cache.as_ref().map(CacheLayer::handle);
        let budget = self.budget.clone().or_else(|| {
            c.budget
                .as_ref()
                .map(|config| Books::Local(BudgetLayer::configured(config).expect(CHECKED)))
        });
        let fallback = c.fallback.as_ref().and_then(|config| {
            let service = match (&self.fallback, &cache_handle) {
                (Some(service), _) => service.clone(),
                (None, Some(cache)) => {
                    // The fallback sits in front of Annotate: the stale lookup parses the
                    // request for itself, as the cache did.
                    let stale = ServiceExt::<Request<Full<Bytes>>>::map_response(
                        AnnotateLayer::new().layer(cache.stale_lookup()),
                        boxed,
                    );
                    BoxCloneSyncService::new(stale)
                }
                (None, None) => return None,
            };
            Some(FallbackLayer::configured(service, config))
        });
        Outer {
            retry,
            batch,
            cache,
            cache_handle,
            budget,
            fallback,
        }
    }
}

/// The layers above the member layers, each `None` when left out.
struct Outer {
    retry: Option<RetryLayer>,
    batch: Option<BatchLayer<EmbeddingsCodec>>,
    cache: Option<CacheLayer>,
    cache_handle: Option<CacheHandle>,
    budget: Option<Books>,
    fallback: Option<FallbackLayer<LlmService>>,
}

/// `stack` boxed, with `fallback` in front when there is one: a stack without a fallback pays
/// nothing for it.
fn finish<T, TB>(stack: T, fallback: Option<FallbackLayer<LlmService>>) -> LlmService
where
    T: Service<Request<Full<Bytes>>, Response = Response<TB>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    T::Future: Send + 'static,
    TB: http_body::Body<Data = Bytes> + Send + 'static,
    TB::Error: Into<BoxError>,
{
    let stack = BoxCloneSyncService::new(ServiceExt::<Request<Full<Bytes>>>::map_response(
        stack, boxed,
    ));
    match fallback {
        Some(fallback) => BoxCloneSyncService::new(
            ServiceExt::<Request<Full<Bytes>>>::map_response(fallback.layer(stack), boxed),
        ),
        None => stack,
    }
}

/// Whether a `[fallback]` without a service of its own can answer: from the cache's stale
/// entries.
fn stale_possible(config: &StackConfig) -> Result<(), ConfigError> {
    match &config.cache {
        Some(cache) if !cache.max_staleness.is_zero() => Ok(()),
        _ => Err(ConfigError::invalid(
            "fallback",
            "answers from the cache's stale entries: keep the cache and set \
             cache.max_staleness (\"10m\", say), or give a fallback service with \
             LlmStack::with_fallback",
        )),
    }
}

/// A layer that answers with its inner service's body (the breaker, the rate limiter, retry),
/// or nothing: left out, it costs a branch and no wrapping of the body.
fn same_body<L>(layer: Option<L>) -> tower::util::Either<L, tower::layer::util::Identity> {
    match layer {
        Some(layer) => tower::util::Either::Left(layer),
        None => tower::util::Either::Right(tower::layer::util::Identity::new()),
    }
}

/// Layers are built from a checked config: building them cannot fail.
const CHECKED: &str = "LlmStack checked the config";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_preset_and_a_long_recovery_build() {
        for p in Preset::ALL {
            LlmStack::new(&StackConfig::preset(p)).unwrap();
        }
        // Longer than the breaker's default longest open period (5 min): a panic before.
        let config =
            StackConfig::from_toml("[circuit_breaker]\nrecovery_timeout = \"10m\"").unwrap();
        let stack = LlmStack::new(&config).unwrap();
        let circuit = stack.config().circuit_breaker.as_ref().unwrap();
        assert_eq!(circuit.max_open_duration, Duration::from_secs(600));
    }

    #[test]
    fn a_setting_a_layer_refuses_is_a_config_error() {
        let error = StackConfig::from_toml("[timeouts]\nfirst_byte = 0").unwrap_err();
        assert_eq!(error.field(), "timeouts.first_byte", "{error}");
        assert_eq!(error.line(), Some(2), "{error}");
    }
}
