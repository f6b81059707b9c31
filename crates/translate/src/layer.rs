//! [`TranslateLayer`]: a client's calls in one format, sent to a deployment that speaks
//! another.

use std::fmt;

use tower::Layer;

use crate::service::Translate;
use crate::{Format, Options, WhenUntranslatable};

/// Translates each chat call from the client's format to the deployment's, and its answer,
/// stream or error back; see the [crate docs](crate).
///
/// Put it where the deployment is known, in front of the layers that count the deployment's own
/// tokens and outcomes (the pool's member stack: its breaker, limits and `Classify` see the
/// deployment's format).
///
/// ```
/// use tollgate_translate::{Format, TranslateLayer, WhenUntranslatable};
///
/// // OpenAI clients, a Claude deployment; refuse what Claude cannot take.
/// let layer = TranslateLayer::new(Format::OpenAiChat, Format::AnthropicMessages)
///     .with_untranslatable(WhenUntranslatable::Refuse);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy)]
pub struct TranslateLayer {
    pub(crate) client: Format,
    pub(crate) upstream: Format,
    pub(crate) options: Options,
    pub(crate) when_untranslatable: WhenUntranslatable,
}

impl TranslateLayer {
    /// Calls written in `client`'s format, sent in `upstream`'s.
    pub const fn new(client: Format, upstream: Format) -> Self {
        Self {
            client,
            upstream,
            options: Options {
                default_max_tokens: 4096,
            },
            when_untranslatable: WhenUntranslatable::Drop,
        }
    }

    /// How requests are written (the `max_tokens` Anthropic requires, when a call sets none).
    pub const fn with_options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// What to do with a call some of whose fields the upstream's format lacks: send it without
    /// them, naming them in [`UNTRANSLATED_HEADER`](crate::UNTRANSLATED_HEADER) on the answer
    /// (the default), or refuse it with a 400 that names them.
    pub const fn with_untranslatable(mut self, when: WhenUntranslatable) -> Self {
        self.when_untranslatable = when;
        self
    }
}

impl fmt::Debug for TranslateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TranslateLayer")
            .field("client", &self.client)
            .field("upstream", &self.upstream)
            .field("options", &self.options)
            .field("when_untranslatable", &self.when_untranslatable)
            .finish()
    }
}

impl<S> Layer<S> for TranslateLayer {
    type Service = Translate<S>;

    fn layer(&self, inner: S) -> Translate<S> {
        Translate::new(inner, *self)
    }
}
