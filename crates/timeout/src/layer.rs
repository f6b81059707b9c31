use tollgate_core::error::ConfigError;
use tower::Layer;

use crate::config::TimeoutConfig;
use crate::service::Timeout;

/// Gives each attempt a time to first byte, an idle limit between chunks and a total time; see
/// the [crate docs](crate).
///
/// [`Default`] is [`TimeoutConfig::default`].
#[derive(Clone, Debug, Default)]
pub struct TimeoutLayer {
    config: TimeoutConfig,
}

impl TimeoutLayer {
    /// A layer with `config`.
    ///
    /// # Errors
    ///
    /// An invalid configuration value.
    pub fn new(config: TimeoutConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The limits it applies.
    pub fn config(&self) -> &TimeoutConfig {
        &self.config
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.config)
    }
}
