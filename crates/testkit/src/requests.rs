//! The requests the benches send: what `AnnotateLayer` would attach to a chat call, without a
//! body to parse, so that the layers under test find their annotation ready.

use http::Request;
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
