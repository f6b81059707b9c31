//! [`ServiceBuilderExt`]: Tollgate's layers as `ServiceBuilder` methods, for composing your own
//! stack instead of [`LlmStack`](crate::LlmStack)'s.

use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tower::ServiceBuilder;
use tower::layer::util::Stack;

/// Tollgate's layers as [`ServiceBuilder`] methods, each with its defaults; each is there when
/// its cargo feature is on. Layers with settings take them as arguments; for anything else,
/// build the layer and pass it to [`ServiceBuilder::layer`].
///
/// Order matters, as with any tower stack: outermost first. The standard order (as
/// [`LlmStack`](crate::LlmStack) builds it) is annotate → cache → batch → retry → circuit
/// breaker → overload → rate limit → concurrency limit → timeouts → classify → client. Two rules are not negotiable:
/// `annotate` comes first (every layer reads what it parses) and `classify` comes last (every
/// layer reads the outcome it attaches).
///
/// ```
/// use tollgate::ServiceBuilderExt as _;
/// use tollgate::ratelimit::Quotas;
/// use tower::ServiceBuilder;
///
/// # fn wrap<S>(client: S) where
/// #     S: tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>,
/// #         Response = http::Response<http_body_util::Full<bytes::Bytes>>>
/// #         + Clone + Send + Sync + 'static,
/// #     S::Future: Send, S::Error: Into<tollgate_core::BoxError> {
/// // A lean stack for a batch job: retries, a breaker and a token-aware limit; no cache.
/// let llm = ServiceBuilder::new()
///     .annotate()
///     .llm_retry()
///     .circuit_breaker()
///     .llm_rate_limit(Quotas::per_minute(500, 200_000))
///     .llm_concurrency_limit(16)
///     .classify()
///     .service(client);
/// # let _ = llm;
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Parses each request once (provider, model, estimated tokens, priority, deadline) for
    /// the layers below: [`AnnotateLayer`].
    fn annotate(self) -> ServiceBuilder<Stack<AnnotateLayer, L>>;

    /// Classifies each response (success, rate limited, overloaded, quota exhausted, ...) and
    /// reads the provider's rate-limit headers: [`ClassifyLayer`].
    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>>;

    /// A bounded response cache with request coalescing, default settings:
    /// [`CacheLayer`](tollgate_cache::CacheLayer).
    #[cfg(feature = "cache")]
    fn cache_responses(self) -> ServiceBuilder<Stack<tollgate_cache::CacheLayer, L>>;

    /// Merges embeddings requests into array requests:
    /// [`BatchLayer`](tollgate_batch::BatchLayer) with the
    /// [`EmbeddingsCodec`](tollgate_batch::EmbeddingsCodec).
    #[cfg(feature = "batch")]
    fn batch_embeddings(
        self,
        config: tollgate_batch::BatchConfig,
    ) -> ServiceBuilder<Stack<tollgate_batch::BatchLayer<tollgate_batch::EmbeddingsCodec>, L>>;

    /// Retries what can succeed, with backoff, Retry-After, a budget and one deadline, default
    /// settings: [`RetryLayer`](tollgate_retry::RetryLayer).
    #[cfg(feature = "retry")]
    fn llm_retry(self) -> ServiceBuilder<Stack<tollgate_retry::RetryLayer, L>>;

    /// A circuit breaker per provider, key and model, default settings:
    /// [`CircuitBreakerLayer`](tollgate_circuit::CircuitBreakerLayer).
    #[cfg(feature = "circuit")]
    fn circuit_breaker(self) -> ServiceBuilder<Stack<tollgate_circuit::CircuitBreakerLayer, L>>;

    /// Adaptive concurrency, overload detection and client-side throttling, default settings:
    /// [`OverloadLayer`](tollgate_overload::OverloadLayer).
    #[cfg(feature = "overload")]
    fn overload_control(self) -> ServiceBuilder<Stack<tollgate_overload::OverloadLayer, L>>;

    /// Requests and tokens per period, paced by the provider's headers:
    /// [`RateLimitLayer`](tollgate_ratelimit::RateLimitLayer) in memory.
    #[cfg(feature = "ratelimit")]
    fn llm_rate_limit(
        self,
        quotas: tollgate_ratelimit::Quotas,
    ) -> ServiceBuilder<Stack<tollgate_ratelimit::RateLimitLayer, L>>;

    /// At most `limit` calls in flight, first come first served, the permit held until the
    /// response body ends: [`ConcurrencyLimitLayer`](tollgate_concurrency::ConcurrencyLimitLayer).
    #[cfg(feature = "concurrency")]
    fn llm_concurrency_limit(
        self,
        limit: usize,
    ) -> ServiceBuilder<Stack<tollgate_concurrency::ConcurrencyLimitLayer, L>>;

    /// First-byte, idle and total timeouts that understand streams, default settings:
    /// [`TimeoutLayer`](tollgate_timeout::TimeoutLayer).
    #[cfg(feature = "timeout")]
    fn llm_timeouts(self) -> ServiceBuilder<Stack<tollgate_timeout::TimeoutLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn annotate(self) -> ServiceBuilder<Stack<AnnotateLayer, L>> {
        self.layer(AnnotateLayer::new())
    }

    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>> {
        self.layer(ClassifyLayer::new())
    }

    #[cfg(feature = "cache")]
    fn cache_responses(self) -> ServiceBuilder<Stack<tollgate_cache::CacheLayer, L>> {
        self.layer(tollgate_cache::CacheLayer::default())
    }

    #[cfg(feature = "batch")]
    fn batch_embeddings(
        self,
        config: tollgate_batch::BatchConfig,
    ) -> ServiceBuilder<Stack<tollgate_batch::BatchLayer<tollgate_batch::EmbeddingsCodec>, L>> {
        self.layer(tollgate_batch::BatchLayer::with_config(
            tollgate_batch::EmbeddingsCodec,
            config,
        ))
    }

    #[cfg(feature = "retry")]
    fn llm_retry(self) -> ServiceBuilder<Stack<tollgate_retry::RetryLayer, L>> {
        self.layer(tollgate_retry::RetryLayer::new())
    }

    #[cfg(feature = "circuit")]
    fn circuit_breaker(self) -> ServiceBuilder<Stack<tollgate_circuit::CircuitBreakerLayer, L>> {
        let config = tollgate_circuit::CircuitConfig::default();
        self.layer(
            tollgate_circuit::CircuitBreakerLayer::new(config)
                .expect("the default circuit config is valid"),
        )
    }

    #[cfg(feature = "overload")]
    fn overload_control(self) -> ServiceBuilder<Stack<tollgate_overload::OverloadLayer, L>> {
        self.layer(tollgate_overload::OverloadLayer::new())
    }

    #[cfg(feature = "ratelimit")]
    fn llm_rate_limit(
        self,
        quotas: tollgate_ratelimit::Quotas,
    ) -> ServiceBuilder<Stack<tollgate_ratelimit::RateLimitLayer, L>> {
        self.layer(tollgate_ratelimit::RateLimitLayer::new(quotas))
    }

    #[cfg(feature = "concurrency")]
    fn llm_concurrency_limit(
        self,
        limit: usize,
    ) -> ServiceBuilder<Stack<tollgate_concurrency::ConcurrencyLimitLayer, L>> {
        self.layer(tollgate_concurrency::ConcurrencyLimitLayer::new(limit))
    }

    #[cfg(feature = "timeout")]
    fn llm_timeouts(self) -> ServiceBuilder<Stack<tollgate_timeout::TimeoutLayer, L>> {
        let config = tollgate_timeout::TimeoutConfig::default();
        self.layer(
            tollgate_timeout::TimeoutLayer::new(config)
                .expect("the default timeout config is valid"),
        )
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "circuit")]
    #[test]
    fn the_default_circuit_config_is_valid() {
        tollgate_circuit::CircuitConfig::default()
            .validate()
            .unwrap();
    }

    #[cfg(feature = "timeout")]
    #[test]
    fn the_default_timeout_config_is_valid() {
        tollgate_timeout::TimeoutConfig::default()
            .validate()
            .unwrap();
    }
}
