use std::sync::Arc;

use tower::Layer;

use super::Annotate;
use crate::Provider;
use crate::estimate::{HeuristicEstimator, SharedEstimator, TokenEstimator};

/// The default cap on a buffered request body: 32 MiB, above OpenAI's largest JSON request.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Buffers each request body once and stores an [`LlmRequest`](crate::LlmRequest) in the
/// request extensions. See the [module docs](super).
///
/// # Clone
///
/// Clones share the configuration (one `Arc`).
#[derive(Clone, Debug)]
pub struct AnnotateLayer {
    pub(super) config: Arc<Config>,
}

#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) max_body_bytes: usize,
    pub(super) provider: Option<Provider>,
    pub(super) estimator: SharedEstimator,
}

impl AnnotateLayer {
    /// A layer with a 32 MiB body cap, provider detection and the heuristic estimator.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                provider: None,
                estimator: SharedEstimator(Arc::new(HeuristicEstimator)),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Sets the largest body that is buffered; a larger one fails with
    /// [`BodyTooLarge`](crate::error::BodyTooLarge) before anything is sent.
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.config_mut().max_body_bytes = max_body_bytes;
        self
    }

    /// Treats every request as going to `provider` instead of detecting it: for an
    /// OpenAI-compatible server on a host Tollgate does not know, or a proxy in front of one.
    /// A [`Provider`] in a request's extensions still wins for that request.
    pub fn with_provider(mut self, provider: Provider) -> Self {
        self.config_mut().provider = Some(provider);
        self
    }

    /// Estimates input tokens with `estimator` instead of the heuristic.
    pub fn with_estimator(mut self, estimator: impl TokenEstimator) -> Self {
        self.config_mut().estimator = SharedEstimator(Arc::new(estimator));
        self
    }
}

impl Default for AnnotateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for AnnotateLayer {
    type Service = Annotate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Annotate::from_layer(inner, self.config.clone())
    }
}
