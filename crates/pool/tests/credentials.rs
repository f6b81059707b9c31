//! Where a pool member sends the caller's credentials: a member with its own key replaces
//! them all; one without passes them on only to the host they came with.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tollgate_core::{CredentialId, EndpointKind, LlmRequest, Provider, Secret};
use tollgate_pool::{Adapter, Auth, Rewrite};

/// The headers that carry a key, then the cookie.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
];

/// A Gemini-style call carrying the caller's key every way a key can travel.
fn with_every_credential() -> Request<Full<Bytes>> {
    let mut request = Request::post(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=AIza-caller",
    )
    .header("authorization", "Bearer sk-caller")
    .header("x-api-key", "sk-ant-caller")
    .header("api-key", "az-caller")
    .header("x-goog-api-key", "AIza-caller")
    .header("cookie", "session=caller")
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(b"{}")))
    .unwrap();
    let mut llm = LlmRequest::new(Provider::Gemini, EndpointKind::GenerateContent);
    llm.credential = Some(CredentialId::from_secret(b"AIza-caller"));
    request.extensions_mut().insert(llm);
    request
}

fn credentials(request: &Request<Full<Bytes>>) -> Vec<String> {
    let mut seen: Vec<String> = CREDENTIAL_HEADERS
        .iter()
        .filter_map(|name| request.headers().get(*name))
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    seen.extend(
        request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|pair| pair.starts_with("key="))
            .map(str::to_owned),
    );
    seen
}

#[test]
fn a_member_without_a_key_sends_the_callers_credentials_to_no_other_host() {
    for base in [
        "https://gemini-proxy.example.com",
        "http://generativelanguage.googleapis.com",
        "https://generativelanguage.googleapis.com:8443",
    ] {
        let mut r = with_every_credential();
        Rewrite::default().base(base).adapt(&mut r).unwrap();
        assert_eq!(credentials(&r), Vec::<String>::new(), "{base}");
        assert_eq!(
            r.uri().path_and_query().unwrap().as_str(),
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            "{base}: the rest of the query stays"
        );
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.extensions().get::<LlmRequest>().unwrap().credential,
            None,
            "{base}: its scope no longer names the caller's key"
        );
    }
    // A request without a host of its own: its credentials were not meant for the base.
    let mut r = Request::post("/v1/chat/completions?key=k")
        .header("authorization", "Bearer sk-caller")
        .body(Full::new(Bytes::new()))
        .unwrap();
    Rewrite::default()
        .base("https://api.openai.com")
        .adapt(&mut r)
        .unwrap();
    assert_eq!(credentials(&r), Vec::<String>::new());
    assert_eq!(r.uri(), "https://api.openai.com/v1/chat/completions");
}

#[test]
fn a_member_without_a_key_keeps_the_callers_credentials_on_their_host() {
    let all = credentials(&with_every_credential());
    assert_eq!(all.len(), 6);
    for rewrite in [
        Rewrite::default(),
        Rewrite::default().base("https://generativelanguage.googleapis.com"),
        Rewrite::default().base("HTTPS://GenerativeLanguage.googleapis.com"),
    ] {
        let mut r = with_every_credential();
        rewrite.adapt(&mut r).unwrap();
        assert_eq!(credentials(&r), all, "{rewrite:?}");
        assert_eq!(
            r.extensions().get::<LlmRequest>().unwrap().credential,
            Some(CredentialId::from_secret(b"AIza-caller"))
        );
    }
}

#[test]
fn a_member_with_its_own_key_replaces_every_credential() {
    let mut r = with_every_credential();
    Rewrite::default()
        .key(Secret::new("AIza-member"), Auth::GoogApiKey)
        .adapt(&mut r)
        .unwrap();
    // Only the member's key is left (and the caller's cookie: the host is the same).
    assert_eq!(credentials(&r), ["AIza-member", "session=caller"]);
    assert_eq!(
        r.uri().query(),
        Some("alt=sse"),
        "the caller's key is not left in the query"
    );
    assert_eq!(
        r.extensions().get::<LlmRequest>().unwrap().credential,
        Some(CredentialId::from_secret(b"AIza-member"))
    );
}
