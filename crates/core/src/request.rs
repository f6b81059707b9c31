//! [`LlmRequest`]: what every layer needs to know about a request, parsed once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{CredentialId, EndpointKind, Provider, Repeat, Scope};

/// The moment by which a request must be done, across every attempt and every wait: a request
/// extension read by the rate limiter (a wait that would pass it fails at once), the retry layer
/// and the timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        let now = Instant::now();
        // A budget past what an `Instant` holds is as good as none: thirty years (tokio's
        // own "far future").
        Self(
            now.checked_add(budget)
                .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400)),
        )
    }

    /// The time left at `now` (zero once passed).
    pub fn remaining(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }
}

/// The facts about one LLM request that the layers act on, parsed once by
/// [`AnnotateLayer`](crate::annotate::AnnotateLayer) and stored in the request extensions.
///
/// Read it with `request.extensions().get::<LlmRequest>()`. Fields the body did not say are
/// `None` (or `false`); a body that is not JSON leaves them all so and sets
/// [`json_body`](Self::json_body) to `false`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LlmRequest {
    /// Where the request goes.
    pub provider: Provider,
    /// Which API it calls.
    pub endpoint: EndpointKind,
    /// Whether it may be sent again after a failed attempt, from its method and path (a
    /// caller who knows better may set it).
    pub repeat: Repeat,
    /// Which credential it carries (an id, never the secret).
    pub credential: Option<CredentialId>,
    /// The model (the deployment, for Azure; from the path, for Gemini).
    pub model: Option<Arc<str>>,
    /// The cap on output tokens per choice: `max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens` or Gemini's `generationConfig.maxOutputTokens`.
    pub max_output_tokens: Option<u32>,
    /// Whether the response will be a stream (`"stream": true`, Gemini `:streamGenerateContent`).
    pub stream: bool,
    /// Whether an OpenAI-style stream will end with a usage chunk
    /// (`stream_options.include_usage`).
    pub stream_include_usage: bool,
    /// `temperature`, when set.
    pub temperature: Option<f32>,
    /// `seed`, when set.
    pub seed: Option<i64>,
    /// The number of choices asked for (`n`, Gemini `candidateCount`), when set.
    pub n: Option<u32>,
    /// For embeddings: how many inputs the request carries.
    pub embedding_inputs: Option<u32>,
    /// The estimated input tokens (prompt, system, tools, images, message framing).
    pub input_tokens_estimate: u32,
    /// Whether the body was a JSON object.
    pub json_body: bool,
}

impl LlmRequest {
    /// A request with nothing known but its provider and endpoint, taken for a `POST`
    /// ([`Repeat::of_post`]).
    pub const fn new(provider: Provider, endpoint: EndpointKind) -> Self {
        Self {
            provider,
            endpoint,
            repeat: Repeat::of_post(endpoint),
            credential: None,
            model: None,
            max_output_tokens: None,
            stream: false,
            stream_include_usage: false,
            temperature: None,
            seed: None,
            n: None,
            embedding_inputs: None,
            input_tokens_estimate: 0,
            json_body: false,
        }
    }

    /// The scope its per-key state lives under: provider, credential, model.
    pub fn scope(&self) -> Scope {
        Scope::new(self.provider)
            .with_credential(self.credential.clone())
            .with_model(self.model.clone())
    }

    /// Whether the response should be the same every time (temperature 0 or a seed), and so
    /// may be cached.
    pub fn is_deterministic(&self) -> bool {
        self.temperature == Some(0.0) || self.seed.is_some()
    }

    /// The tokens to reserve before sending: the input estimate plus the output cap for every
    /// choice. Without an output cap, `default_output_tokens` per choice is assumed (the
    /// limiter passes its running average of observed output).
    pub fn reserved_tokens(&self, default_output_tokens: u32) -> u64 {
        let choices = u64::from(self.n.unwrap_or(1).max(1));
        let output = if self.endpoint.is_generation() {
            u64::from(self.max_output_tokens.unwrap_or(default_output_tokens))
        } else {
            0
        };
        u64::from(self.input_tokens_estimate).saturating_add(output.saturating_mul(choices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_every_choice_and_only_generation() {
        let mut chat = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        chat.input_tokens_estimate = 100;
        assert_eq!(chat.reserved_tokens(500), 600);
        chat.max_output_tokens = Some(50);
        chat.n = Some(3);
        assert_eq!(chat.reserved_tokens(500), 250);

        let mut embed = LlmRequest::new(Provider::OpenAi, EndpointKind::Embeddings);
        embed.input_tokens_estimate = 80;
        assert_eq!(embed.reserved_tokens(500), 80);
    }

    #[test]
    fn determinism() {
        let mut r = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
        assert!(!r.is_deterministic());
        r.temperature = Some(0.0);
        assert!(r.is_deterministic());
        r.temperature = Some(0.7);
        r.seed = Some(42);
        assert!(r.is_deterministic());
    }
}
