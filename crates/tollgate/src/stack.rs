//! [`LlmStack`]: the standard stack over any client.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tollgate_batch::{BatchConfig, BatchLayer, EmbeddingsCodec};
use tollgate_cache::policy::{CachePolicy, DefaultPolicy};
use tollgate_cache::{CacheConfig, CacheHandle, CacheLayer};
use tollgate_circuit::{CircuitBreakerLayer, CircuitConfig, CircuitHandle, CircuitState};
use tollgate_concurrency::ConcurrencyLimitLayer;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Scope};
use tollgate_overload::{Aimd, OverloadHandle, OverloadLayer, OverloadState};
use tollgate_ratelimit::{LimitState, MemoryStore, Quotas, RateLimitLayer};
use tollgate_retry::{Backoff, Jitter, RetryLayer};
use tollgate_timeout::{TimeoutConfig, TimeoutLayer};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::config::{ConfigError, Preset, StackConfig, invalid};

/// A response body from the stack.
pub type LlmBody = UnsyncBoxBody<Bytes, BoxError>;

/// The stack as one service: `Request<Full<Bytes>>` in, a response with its body out.
pub type LlmService = BoxCloneSyncService<Request<Full<Bytes>>, Response<LlmBody>, BoxError>;

/// The cache's default policy, or nothing at all when the cache is disabled.
#[derive(Clone, Copy, Debug)]
struct Cacheable(bool);

impl CachePolicy for Cacheable {
    fn is_cacheable(&self, head: &http::request::Parts, llm: &tollgate_core::LlmRequest) -> bool {
        self.0 && DefaultPolicy.is_cacheable(head, llm)
    }
}

/// Boxes a response body.
fn boxed<B>(response: Response<B>) -> Response<LlmBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

/// Every setting, resolved from the preset and the overrides.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) requests_per_minute: Option<u64>,
    pub(crate) tokens_per_minute: Option<u64>,
    pub(crate) concurrency: usize,
    pub(crate) adaptive: bool,
    pub(crate) deadline: Option<Duration>,
    pub(crate) failure_threshold: u32,
    pub(crate) recovery: Duration,
    pub(crate) probes: u32,
    pub(crate) retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) resend_unanswered: bool,
    pub(crate) batch: Option<(u32, Duration)>,
    pub(crate) per_model: bool,
    pub(crate) learn: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) timeouts: TimeoutConfig,
    pub(crate) cache: Option<CacheConfig>,
}

impl Resolved {
    /// The breaker's settings.
    fn circuit(&self) -> CircuitConfig {
        let defaults = CircuitConfig::default();
        CircuitConfig {
            consecutive_failures: Some(self.failure_threshold),
            open_duration: self.recovery,
            // Repeated trips lengthen the open period up to this: never below the configured one.
            max_open_duration: defaults.max_open_duration.max(self.recovery),
            half_open_probes: self.probes,
            seed: self.seed.unwrap_or(defaults.seed),
            ..defaults
        }
    }

    /// Whether every layer accepts its settings, so that building the stack cannot fail.
    fn check(&self) -> Result<(), ConfigError> {
        let layer =
            |section: &str, error: &dyn std::fmt::Display| invalid(section, error.to_string());
        self.circuit()
            .validate()
            .map_err(|e| layer("circuit_breaker", &e))?;
        self.timeouts
            .validate()
            .map_err(|e| layer("timeouts", &e))?;
        if let Some(cache) = &self.cache {
            cache.validate().map_err(|e| layer("cache", &e))?;
        }
        Ok(())
    }
}

fn preset(preset: Preset) -> Resolved {
    let secs = Duration::from_secs;
    match preset {
        Preset::Conservative => Resolved {
            requests_per_minute: Some(30),
            tokens_per_minute: None,
            concurrency: 1,
            adaptive: false,
            deadline: Some(secs(600)),
            failure_threshold: 3,
            recovery: secs(60),
            probes: 1,
            retries: 5,
            backoff: Backoff::exponential(secs(2), secs(60)),
            resend_unanswered: false,
            batch: Some((256, Duration::from_millis(50))),
            per_model: true,
            learn: true,
            seed: None,
            timeouts: TimeoutConfig::default(),
            cache: Some(CacheConfig::default()),
        },
        Preset::Balanced => Resolved {
            requests_per_minute: None,
            tokens_per_minute: None,
            concurrency: 10,
            adaptive: true,
            deadline: Some(secs(300)),
            failure_threshold: 5,
            recovery: secs(30),
            probes: 3,
            retries: 5,
            backoff: Backoff::patient(),
            resend_unanswered: false,
            batch: Some((128, Duration::from_millis(10))),
            per_model: true,
            learn: true,
            seed: None,
            timeouts: TimeoutConfig::default(),
            cache: Some(CacheConfig::default()),
        },
        Preset::Aggressive => Resolved {
            requests_per_minute: None,
            tokens_per_minute: None,
            concurrency: 50,
            adaptive: true,
            deadline: Some(secs(120)),
            failure_threshold: 10,
            recovery: secs(15),
            probes: 5,
            retries: 3,
            backoff: Backoff::exponential(Duration::from_millis(500), secs(8)),
            resend_unanswered: false,
            batch: Some((64, Duration::from_millis(5))),
            per_model: true,
            learn: true,
            seed: None,
            timeouts: TimeoutConfig::default(),
            cache: Some(CacheConfig::default()),
        },
    }
}

impl StackConfig {
    /// The most calls the stack keeps in flight: `max_concurrent_requests`, else the preset's.
    pub fn max_concurrent_calls(&self) -> usize {
        resolve(self).concurrency
    }

    /// The longest silence allowed between two chunks of a stream (`timeouts.idle`, else the
    /// default), if any.
    pub fn stream_idle_timeout(&self) -> Option<Duration> {
        resolve(self).timeouts.idle
    }
}

pub(crate) fn resolve(config: &StackConfig) -> Resolved {
    let mut r = preset(config.preset.unwrap_or_default());
    if config.max_requests_per_minute.is_some() {
        r.requests_per_minute = config.max_requests_per_minute;
    }
    if config.max_tokens_per_minute.is_some() {
        r.tokens_per_minute = config.max_tokens_per_minute;
    }
    r.concurrency = config.max_concurrent_requests.unwrap_or(r.concurrency);
    r.adaptive = config.adaptive_concurrency.unwrap_or(r.adaptive);
    r.per_model = config.limits_per_model.unwrap_or(r.per_model);
    r.learn = config.learn_limits.unwrap_or(r.learn);
    r.seed = config.seed.or(r.seed);
    let c = &config.cache;
    r.cache = match c.enabled {
        Some(false) => None,
        _ => r.cache.map(|mut cache| {
            cache.max_entries = c.max_entries.unwrap_or(cache.max_entries);
            cache.max_bytes = c.max_bytes.unwrap_or(cache.max_bytes);
            cache.time_to_live = c.ttl.unwrap_or(cache.time_to_live);
            cache
        }),
    };
    let t = &config.timeouts;
    r.timeouts.first_byte = t.first_byte.or(r.timeouts.first_byte);
    r.timeouts.idle = t.idle.or(r.timeouts.idle);
    r.timeouts.total = t.total.or(r.timeouts.total);
    r.timeouts.per_output_token = t.per_output_token.or(r.timeouts.per_output_token);
    if config.request_timeout.is_some() {
        r.deadline = config.request_timeout;
    }
    let cb = &config.circuit_breaker;
    r.failure_threshold = cb.failure_threshold.unwrap_or(r.failure_threshold);
    r.recovery = cb.recovery_timeout.unwrap_or(r.recovery);
    r.probes = cb.half_open_requests.unwrap_or(r.probes);
    let b = &config.backoff_strategy;
    r.retries = b.max_retries.unwrap_or(r.retries);
    r.resend_unanswered = b.resend_unanswered.unwrap_or(r.resend_unanswered);
    if b.initial_delay.is_some()
        || b.max_delay.is_some()
        || b.multiplier.is_some()
        || b.jitter.is_some()
    {
        let (base, cap, multiplier, jitter) = match r.backoff {
            Backoff::Exponential {
                base,
                multiplier,
                cap,
                jitter,
            } => (base, cap, multiplier, jitter),
            _ => (
                Duration::from_secs(1),
                Duration::from_secs(60),
                2.0,
                Jitter::Full,
            ),
        };
        r.backoff = Backoff::Exponential {
            base: b.initial_delay.unwrap_or(base),
            cap: b.max_delay.unwrap_or(cap),
            multiplier: b.multiplier.unwrap_or(multiplier),
            jitter: match b.jitter {
                Some(true) => Jitter::Full,
                Some(false) => Jitter::None,
                None => jitter,
            },
        };
    }
    let batch = &config.batch;
    r.batch = match batch.enabled {
        Some(false) => None,
        _ => r.batch.map(|(size, wait)| {
            (
                batch.max_batch_size.unwrap_or(size),
                batch.max_wait.unwrap_or(wait),
            )
        }),
    };
    r
}

/// The standard stack, outermost first:
/// Annotate → Cache → Batch (embeddings) → Retry → CircuitBreaker → Overload (adaptive limit,
/// throttle) → RateLimit → ConcurrencyLimit → Timeout (first token, idle, total) → Classify →
/// your client.
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
    resolved: Resolved,
}

/// Watches the stack: breakers, adaptive limits, the cache.
#[derive(Clone, Debug)]
pub struct StackHandle {
    /// The breakers.
    pub circuit: CircuitHandle,
    /// The adaptive limits and overload states.
    pub overload: OverloadHandle,
    /// The response cache (`None` when disabled).
    pub cache: Option<CacheHandle>,
    /// The rate limits: configured, reported by the provider's headers, or learned from its
    /// refusals.
    pub rate_limits: MemoryStore,
    /// Whether rate limits are kept per model (else per key: a scope without its model).
    per_model_limits: bool,
}

/// One scope's health.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScopeHealth {
    /// The scope (provider, credential id, model).
    pub scope: Scope,
    /// Its breaker.
    pub circuit: CircuitState,
    /// Its overload state.
    pub overload: OverloadState,
    /// Its concurrency limit now.
    pub limit: usize,
    /// Its calls in flight.
    pub in_flight: usize,
    /// Its rate limits, each with where it comes from (configured, the provider's headers, or
    /// learned from its refusals) and what is left now.
    pub rate_limits: Vec<LimitState>,
}

impl StackHandle {
    /// Every scope the stack has seen.
    pub fn health(&self) -> Vec<ScopeHealth> {
        self.overload
            .snapshot()
            .into_iter()
            .map(|s| {
                let limited = if self.per_model_limits {
                    s.scope.clone()
                } else {
                    s.scope.clone().with_model(None)
                };
                ScopeHealth {
                    circuit: self.circuit.state(&s.scope),
                    rate_limits: self.rate_limits.limits(&limited),
                    scope: s.scope,
                    overload: s.state,
                    limit: s.limit,
                    in_flight: s.in_flight,
                }
            })
            .collect()
    }
}

impl LlmStack {
    /// The stack with `config`.
    ///
    /// # Errors
    ///
    /// A setting that is not usable.
    pub fn new(config: &StackConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let resolved = resolve(config);
        resolved.check()?;
        Ok(Self { resolved })
    }

    /// The stack as a preset sets it.
    pub fn preset(preset: Preset) -> Self {
        Self {
            resolved: resolve(&StackConfig {
                preset: Some(preset),
                ..StackConfig::default()
            }),
        }
    }

    /// The stack over `client`.
    pub fn service<S, RB>(&self, client: S) -> (LlmService, StackHandle)
    where
        S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        RB: http_body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let r = &self.resolved;
        let circuit =
            CircuitBreakerLayer::new(r.circuit()).expect("LlmStack::new checked the config");
        let circuit_handle = circuit.handle();
        let probe = circuit_handle.clone();
        let aimd = if r.adaptive {
            Aimd::new()
                .with_initial(r.concurrency.min(4))
                .with_bounds(1, r.concurrency)
        } else {
            Aimd::new()
                .with_initial(r.concurrency)
                .with_bounds(r.concurrency, r.concurrency)
        };
        let mut overload = OverloadLayer::new();
        if let Some(seed) = r.seed {
            overload = overload.with_seed(seed);
        }
        let overload = overload
            .with_algorithm(aimd)
            .with_breaker_probe(move |scope| probe.state(scope) != CircuitState::Closed);
        let overload_handle = overload.handle();
        let mut retry = RetryLayer::new()
            .with_max_attempts(r.retries + 1)
            .with_backoff(r.backoff)
            .with_resend_unanswered(r.resend_unanswered);
        if let Some(deadline) = r.deadline {
            retry = retry.with_deadline(deadline);
        }
        if let Some(seed) = r.seed {
            retry = retry.with_seed(seed);
        }
        let quotas = Quotas::per_minute(
            r.requests_per_minute.unwrap_or(0),
            r.tokens_per_minute.unwrap_or(0),
        );
        let (size, wait) = r.batch.unwrap_or((1, Duration::ZERO));
        let signal = overload_handle.clone();
        let batch = BatchLayer::with_config(
            EmbeddingsCodec,
            BatchConfig {
                max_batch_size: size,
                max_wait: wait,
                ..BatchConfig::default()
            },
        )
        .with_size_signal(move |scope, max| {
            u32::try_from(signal.recommended_batch_size(scope, max as usize)).unwrap_or(max)
        });
        // Disabled, the cache stores nothing: a policy that calls nothing cacheable.
        let cache = match &r.cache {
            Some(config) => CacheLayer::new(config.clone())
                .expect("LlmStack::new checked the config")
                .with_policy(Cacheable(true)),
            None => CacheLayer::new(CacheConfig {
                max_entries: 1,
                max_bytes: 1,
                ..CacheConfig::default()
            })
            .expect("a minimal cache is valid")
            .with_policy(Cacheable(false)),
        };
        let cache_handle = r.cache.as_ref().map(|_| cache.handle());
        let rate_limit = RateLimitLayer::new(quotas)
            .with_per_model_limits(r.per_model)
            .with_learning(r.learn);
        let rate_limits = rate_limit.store().clone();
        let stack = ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(cache)
            .layer(batch)
            .layer(retry)
            .layer(circuit)
            .layer(overload)
            .layer(rate_limit)
            .layer(ConcurrencyLimitLayer::new(r.concurrency))
            .layer(TimeoutLayer::new(r.timeouts).expect("LlmStack::new checked the config"))
            .layer(ClassifyLayer::new())
            .service(client);
        let stack = ServiceExt::<Request<Full<Bytes>>>::map_response(stack, boxed);
        (
            BoxCloneSyncService::new(stack),
            StackHandle {
                circuit: circuit_handle,
                overload: overload_handle,
                cache: cache_handle,
                rate_limits,
                per_model_limits: r.per_model,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_and_a_long_recovery_build() {
        for p in [Preset::Conservative, Preset::Balanced, Preset::Aggressive] {
            preset(p).check().unwrap();
        }
        // Longer than the breaker's default longest open period (5 min): a panic before.
        let config =
            StackConfig::from_toml("[circuit_breaker]\nrecovery_timeout = \"10m\"").unwrap();
        let stack = LlmStack::new(&config).unwrap();
        assert_eq!(
            stack.resolved.circuit().max_open_duration,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn a_setting_a_layer_refuses_is_a_config_error() {
        let config = StackConfig::from_toml("[timeouts]\nfirst_byte = 0").unwrap();
        let error = LlmStack::new(&config).unwrap_err();
        assert_eq!(error.field, "timeouts", "{error}");
        assert!(error.message.contains("first_byte"), "{error}");
    }

    #[test]
    fn overrides_win_over_the_preset() {
        let config = StackConfig::from_toml(
            r#"
            preset = "conservative"
            max_concurrent_requests = 3
            [backoff_strategy]
            max_retries = 2
            jitter = false
            [batch]
            enabled = false
        "#,
        )
        .unwrap();
        let r = resolve(&config);
        assert_eq!(r.concurrency, 3);
        assert_eq!(r.requests_per_minute, Some(30), "from the preset");
        assert_eq!(r.retries, 2);
        assert!(matches!(
            r.backoff,
            Backoff::Exponential {
                jitter: Jitter::None,
                ..
            }
        ));
        assert_eq!(r.batch, None);
        assert!(!r.adaptive);
        assert_eq!(resolve(&StackConfig::default()), preset(Preset::Balanced));
    }
}
