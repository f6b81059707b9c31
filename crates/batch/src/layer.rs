use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tollgate_core::Scope;
use tower::Layer;

use crate::codec::BatchCodec;
use crate::service::Batch;

/// What a full queue does to a new request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum WhenFull {
    /// `poll_ready` waits for room (back-pressure to the caller).
    #[default]
    Wait,
    /// The request fails at once with [`QueueFull`](crate::QueueFull).
    Fail,
}

/// When a batch is flushed, and how many requests may wait.
///
/// With the `serde` feature it reads from TOML or JSON (`max_wait` as seconds or text,
/// `when_full` as `"wait"` or `"fail"`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BatchConfig {
    /// Items (embedding inputs) per merged request; capped by the codec's own limit
    /// (default 256).
    pub max_batch_size: u32,
    /// Input tokens per merged request; capped by the codec's own limit (default: the
    /// codec's limit).
    pub max_tokens: Option<u64>,
    /// The longest a request waits for others to join it (default 10 ms).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::config::duration"))]
    pub max_wait: Duration,
    /// Requests waiting in the batcher at most (default 10,000).
    pub queue_capacity: usize,
    /// What a full queue does (default: wait).
    pub when_full: WhenFull,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 256,
            max_tokens: None,
            max_wait: Duration::from_millis(10),
            queue_capacity: 10_000,
            when_full: WhenFull::Wait,
        }
    }
}

/// Tells the batcher how large a batch may be now for a scope, given the configured maximum:
/// [`OverloadHandle::recommended_batch_size`] fits (smaller under errors, 1 while the breaker is
/// open).
///
/// [`OverloadHandle::recommended_batch_size`]: https://docs.rs/tollgate-overload
pub type SizeSignal = Arc<dyn Fn(&Scope, u32) -> u32 + Send + Sync>;

/// Merges requests into few upstream calls; see the [crate docs](crate).
///
/// # Clone
///
/// Each service the layer makes has its own batcher (one worker task, started on first use);
/// clones of that service share it.
pub struct BatchLayer<C> {
    pub(crate) codec: Arc<C>,
    pub(crate) config: Arc<BatchConfig>,
    pub(crate) signal: Option<SizeSignal>,
}

impl<C> Clone for BatchLayer<C> {
    fn clone(&self) -> Self {
        Self {
            codec: self.codec.clone(),
            config: self.config.clone(),
            signal: self.signal.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for BatchLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("codec", &self.codec)
            .field("config", &self.config)
            .field("signal", &self.signal.is_some())
            .finish()
    }
}

impl<C: BatchCodec> BatchLayer<C> {
    /// Batches with `codec` and the default [`BatchConfig`].
    pub fn new(codec: C) -> Self {
        Self::with_config(codec, BatchConfig::default())
    }

    /// Batches with `codec` and `config`.
    ///
    /// # Panics
    ///
    /// When the batch size, the queue capacity or the token cap is 0.
    pub fn with_config(codec: C, config: BatchConfig) -> Self {
        assert!(config.max_batch_size > 0, "a batch must hold one request");
        assert!(config.queue_capacity > 0, "the queue must hold one request");
        assert!(config.max_tokens != Some(0), "a batch must allow tokens");
        Self {
            codec: Arc::new(codec),
            config: Arc::new(config),
            signal: None,
        }
    }

    /// Sizes batches per scope from `signal` (never above the configured maximum).
    pub fn with_size_signal(
        mut self,
        signal: impl Fn(&Scope, u32) -> u32 + Send + Sync + 'static,
    ) -> Self {
        self.signal = Some(Arc::new(signal));
        self
    }
}

impl<S, C> Layer<S> for BatchLayer<C>
where
    S: Clone,
    C: BatchCodec,
{
    type Service = Batch<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Batch::new(inner, self.clone())
    }
}
