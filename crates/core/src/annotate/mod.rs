//! Parse once: [`AnnotateLayer`] reads a request's body a single time and stores what every
//! other layer needs as an [`LlmRequest`] in the request extensions.
//!
//! # Why buffer the body
//!
//! Token-aware limits need the model, the output cap and an input estimate before the request
//! is sent; retries and batching need a body they can send again. Buffering once, into
//! [`Bytes`] that clone for free, serves all of them; parsing once keeps the
//! whole stack's overhead to a single pass over the JSON.
//!
//! A body larger than the cap (32 MiB by default) fails with
//! [`BodyTooLarge`](crate::error::BodyTooLarge) and nothing is sent; so does a model name no
//! provider uses (empty, over 256 bytes, odd characters), with
//! [`InvalidModel`](crate::error::InvalidModel), since every layer keeps state by model. A body that is not JSON,
//! or an endpoint Tollgate does not know, is forwarded unchanged with whatever could be learned
//! from the URI and headers: the provider's own 400 is the authority on what is valid.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tollgate_core::{annotate::AnnotateLayer, EndpointKind, LlmRequest, Provider};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate_core::BoxError> {
//! let inner = service_fn(|request: http::Request<Full<Bytes>>| async move {
//!     let llm = request.extensions().get::<LlmRequest>().cloned().unwrap();
//!     Ok::<_, std::convert::Infallible>(llm)
//! });
//! let service = AnnotateLayer::new().layer(inner);
//!
//! let request = http::Request::post("https://api.openai.com/v1/chat/completions")
//!     .header("authorization", "Bearer sk-example")
//!     .body(Full::new(Bytes::from_static(
//!         br#"{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"user","content":"Hello!"}]}"#,
//!     )))?;
//! let llm = service.oneshot(request).await?;
//! assert_eq!(llm.provider, Provider::OpenAi);
//! assert_eq!(llm.endpoint, EndpointKind::ChatCompletions);
//! assert_eq!(llm.model.as_deref(), Some("gpt-4o-mini"));
//! assert_eq!(llm.max_output_tokens, Some(256));
//! assert_eq!(llm.input_tokens_estimate, 6);
//! # Ok(()) }
//! ```

pub mod future;
mod layer;
pub(crate) mod parse;
mod service;

pub use self::layer::{AnnotateLayer, DEFAULT_MAX_BODY_BYTES};
pub use self::service::Annotate;

use bytes::Bytes;
use http::request::Parts;

use crate::estimate::TokenEstimator;
use crate::{CredentialId, EndpointKind, LlmRequest, Provider, Repeat};

/// Builds the [`LlmRequest`] for a request head and its buffered body.
///
/// This is what [`AnnotateLayer`] runs; it is public for layers and tools that hold a request
/// outside a tower stack (a batch file, a captured request). The provider is, in order: a
/// [`Provider`] in the request extensions, `provider`, or [`Provider::detect`]; the credential
/// a [`CredentialId`] in the extensions or the one the headers carry.
pub fn annotate(
    parts: &Parts,
    body: &Bytes,
    provider: Option<Provider>,
    estimator: &dyn TokenEstimator,
) -> LlmRequest {
    let provider = parts
        .extensions
        .get::<Provider>()
        .copied()
        .or(provider)
        .unwrap_or_else(|| Provider::detect(&parts.uri, &parts.headers));
    let path = parts.uri.path();
    let endpoint = EndpointKind::from_path(path);
    let mut request = LlmRequest::new(provider, endpoint);
    request.repeat = Repeat::of(&parts.method, endpoint, path);
    request.credential = parts
        .extensions
        .get::<CredentialId>()
        .cloned()
        .or_else(|| crate::credential::credential_id(&parts.uri, &parts.headers));
    request.model = model_from_path(provider, path).map(Into::into);
    request.stream = path.ends_with(":streamGenerateContent");
    if let Some(fields) = parse::BodyFields::parse(body, estimator) {
        fields.apply(&mut request);
        // Gemini's `:embedContent` embeds its one `content`; `:batchEmbedContents` counts its
        // `requests` like OpenAI's `input` array.
        if request.json_body && path.ends_with(":embedContent") {
            request.embedding_inputs = Some(1);
        }
    }
    request
}

/// The model named by the path: the deployment for Azure, the model for Gemini.
fn model_from_path(provider: Provider, path: &str) -> Option<&str> {
    let after = |marker: &str| {
        let rest = &path[path.find(marker)? + marker.len()..];
        let end = rest.find(['/', ':']).unwrap_or(rest.len());
        Some(&rest[..end]).filter(|name| !name.is_empty())
    };
    match provider {
        Provider::AzureOpenAi => after("/deployments/"),
        Provider::Gemini => after("/models/"),
        _ => None,
    }
}
