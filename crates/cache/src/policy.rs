//! Which requests may be answered from the cache.
//!
//! An LLM answer can be reused only when asking again would give the same answer. By default
//! ([`DefaultPolicy`]) that is an embeddings request, or a generation request that asks for
//! sameness: `temperature` 0 or a `seed`, and one choice. Anything else goes straight through,
//! unless the caller opts in or out per request with headers:
//!
//! | request header | effect |
//! |---|---|
//! | `x-tollgate-cache: force` | cached whatever the policy says (the header is not forwarded) |
//! | `cache-control: no-cache` | not answered from the cache; the fresh answer replaces the stored one |
//! | `cache-control: no-store` | neither answered from nor stored in the cache |
//!
//! The header's name is the layer's ([`with_header_name`](crate::CacheLayer::with_header_name)).
//! The provider's own `cache-control` response headers are not read: they describe the HTTP
//! resource, and OpenAI's, say, forbid caching every answer.

use http::request::Parts;
use http::{HeaderMap, HeaderName, Method};
use tollgate_core::{EndpointKind, LlmRequest};

/// Decides which requests are cacheable (see the [module docs](self)).
///
/// Any `Fn(&Parts, &LlmRequest) -> bool` is a policy.
pub trait CachePolicy: Send + Sync + 'static {
    /// Whether the answer to this request may be stored, and a stored one served.
    fn is_cacheable(&self, request: &Parts, llm: &LlmRequest) -> bool;
}

impl<F> CachePolicy for F
where
    F: Fn(&Parts, &LlmRequest) -> bool + Send + Sync + 'static,
{
    fn is_cacheable(&self, request: &Parts, llm: &LlmRequest) -> bool {
        self(request, llm)
    }
}

/// POSTs to an embeddings endpoint; POSTs to chat completions, completions, messages or
/// Gemini's generateContent that set `temperature` 0 or a `seed` and ask for at most one
/// choice.
///
/// The Responses API is left out: its answers can depend on state kept by the provider
/// (`previous_response_id`, stored conversations) that the request body does not show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultPolicy;

impl CachePolicy for DefaultPolicy {
    fn is_cacheable(&self, request: &Parts, llm: &LlmRequest) -> bool {
        if request.method != Method::POST {
            return false;
        }
        match llm.endpoint {
            EndpointKind::Embeddings => true,
            EndpointKind::ChatCompletions
            | EndpointKind::Completions
            | EndpointKind::Messages
            | EndpointKind::GenerateContent => llm.is_deterministic() && llm.n.unwrap_or(1) <= 1,
            _ => false,
        }
    }
}

/// What the request's headers ask of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Directive {
    /// Cache it whatever the policy says (`name: force`).
    pub(crate) force: bool,
    /// Do not serve a stored answer; store the fresh one (`cache-control: no-cache`).
    pub(crate) no_cache: bool,
    /// Leave the cache alone (`cache-control: no-store`).
    pub(crate) no_store: bool,
}

impl Directive {
    /// Reads `cache-control` and the layer's opt-in header `name`.
    pub(crate) fn of(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut directive = Self::default();
        for value in headers.get_all(http::header::CACHE_CONTROL) {
            for part in value.as_bytes().split(|&b| b == b',') {
                let part = part.trim_ascii();
                directive.no_store |= part.eq_ignore_ascii_case(b"no-store");
                directive.no_cache |= part.eq_ignore_ascii_case(b"no-cache");
            }
        }
        directive.force = headers
            .get(name)
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"force"));
        directive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::Provider;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_default_policy_caches_what_repeats() {
        let post = parts(Method::POST, &[]);
        let cacheable = |llm: &LlmRequest| DefaultPolicy.is_cacheable(&post, llm);
        let embed = LlmRequest::new(Provider::OpenAi, EndpointKind::Embeddings);
        assert!(cacheable(&embed));
        assert!(!DefaultPolicy.is_cacheable(&parts(Method::GET, &[]), &embed));

        let mut chat = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        assert!(!cacheable(&chat));
        chat.temperature = Some(0.0);
        assert!(cacheable(&chat));
        chat.n = Some(2);
        assert!(!cacheable(&chat));
        chat.n = Some(1);
        chat.temperature = Some(0.7);
        chat.seed = Some(7);
        assert!(cacheable(&chat));

        let mut responses = LlmRequest::new(Provider::OpenAi, EndpointKind::Responses);
        responses.temperature = Some(0.0);
        assert!(!cacheable(&responses));
        let batches = LlmRequest::new(Provider::OpenAi, EndpointKind::Batches);
        assert!(!cacheable(&batches));
    }

    #[test]
    fn directives() {
        let name = HeaderName::from_static("x-tollgate-cache");
        let of = |headers: &[(&str, &str)]| {
            let Directive {
                force,
                no_cache,
                no_store,
            } = Directive::of(&parts(Method::POST, headers).headers, &name);
            (force, no_cache, no_store)
        };
        assert_eq!(of(&[]), (false, false, false));
        assert_eq!(of(&[("x-tollgate-cache", " Force ")]), (true, false, false));
        assert_eq!(of(&[("x-tollgate-cache", "maybe")]), (false, false, false));
        assert_eq!(
            of(&[("cache-control", "max-age=0, No-Cache")]),
            (false, true, false)
        );
        assert_eq!(of(&[("cache-control", "no-store")]), (false, false, true));
        assert_eq!(
            of(&[("cache-control", "no-cache"), ("cache-control", "no-store")]),
            (false, true, true)
        );
        assert_eq!(
            of(&[("cache-control", "no-cache"), ("x-tollgate-cache", "force")]),
            (true, true, false)
        );
    }
}
