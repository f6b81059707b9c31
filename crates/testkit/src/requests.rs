//! The requests the benches send: what `AnnotateLayer` would attach to a chat call, without a
//! body to parse, so that the layers under test find their annotation ready; and, for the whole
//! stack, a real chat completion request with the small answer its upstream gives at once.

use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tollgate_core::{CredentialId, EndpointKind, LlmRequest, Provider};

/// What `AnnotateLayer` would say about a chat call to gpt-4o-mini with the key `team-a`.
pub fn chat_annotation() -> LlmRequest {
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.credential = Some(CredentialId::named("team-a"));
    llm.model = Some("gpt-4o-mini".into());
    llm
}

/// Makes body-less requests that each carry a clone of `extension` (so that every variant of a
/// bench drops the same).
pub fn requests_with<T>(extension: T) -> impl FnMut() -> Request<()>
where
    T: Clone + Send + Sync + 'static,
{
    move || {
        let mut request = Request::new(());
        request.extensions_mut().insert(extension.clone());
        request
    }
}

/// Makes requests annotated with [`chat_annotation`]; the annotation's strings are shared, not
/// copied.
pub fn chat_requests() -> impl FnMut() -> Request<()> {
    requests_with(chat_annotation())
}

/// The answer [`small_completion`] gives: a one-word chat completion with its usage.
pub const SMALL_COMPLETION: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}"#;

/// An upstream that answers every request at once with [`SMALL_COMPLETION`] (for
/// `service_fn`): what is measured around it is the stack's own work.
pub fn small_completion(
    _: Request<Full<Bytes>>,
) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(
        SMALL_COMPLETION,
    )))))
}

/// A 300-byte chat completion to api.openai.com with an API key, not cacheable (no
/// temperature 0), so that every layer of the standard stack runs for it.
///
/// # Panics
///
/// Never: the request is well formed.
pub fn chat_completion_request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-bench-0123456789")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise: the quick brown fox jumps over the lazy dog, twice, and then once more for luck."}]}"#,
        )))
        .expect("a request")
}
