//! Where a request carries its credential: finding it, naming it without revealing it, and
//! the header names every layer that moves or stores a request must strip.

use http::{HeaderMap, Uri};

use crate::CredentialId;

/// Headers that carry an API key, in every provider's style: `Authorization` (OpenAI and
/// every compatible server), `x-api-key` (Anthropic), `api-key` (Azure OpenAI),
/// `x-goog-api-key` (Gemini). Gemini also takes a key in the query: see [`without_key_param`].
pub const API_KEY_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Headers that may carry any credential: the [`API_KEY_HEADERS`], a proxy's credentials and
/// cookies. Never forwarded to another host, written to disk or logged.
pub const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
    "cookie",
];

/// `query` (without its `?`) without any `key` parameter, or `None` when it has none:
/// `a=1&key=sk&b=2` → `a=1&b=2`, `key=sk` → an empty query.
pub fn without_key_param(query: &str) -> Option<String> {
    let is_key = |pair: &str| pair == "key" || pair.starts_with("key=");
    if !query.split('&').any(is_key) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_key(pair))
        .collect();
    Some(kept.join("&"))
}

/// The id of the credential in `headers` (`Authorization: Bearer`, `x-api-key`, `api-key`,
/// `x-goog-api-key`) or the `key` query parameter (Gemini), if any.
pub(crate) fn credential_id(uri: &Uri, headers: &HeaderMap) -> Option<CredentialId> {
    let from_header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let secret = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| strip_scheme(v.as_bytes()))
        .or_else(|| from_header("x-api-key"))
        .or_else(|| from_header("api-key"))
        .or_else(|| from_header("x-goog-api-key"))
        .or_else(|| query_key(uri))?;
    (!secret.is_empty()).then(|| CredentialId::from_secret(secret))
}

/// `Bearer sk-...` → `sk-...` (any scheme, case-insensitive); a bare token is kept whole.
fn strip_scheme(value: &[u8]) -> &[u8] {
    match value.iter().position(|&b| b == b' ') {
        Some(space) => value[space + 1..].trim_ascii(),
        None => value.trim_ascii(),
    }
}

fn query_key(uri: &Uri) -> Option<&[u8]> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .map(str::as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_the_query_is_removed_and_nothing_else() {
        assert_eq!(
            without_key_param("alt=sse&key=sk-1").as_deref(),
            Some("alt=sse")
        );
        assert_eq!(without_key_param("key=sk-1").as_deref(), Some(""));
        assert_eq!(without_key_param("key").as_deref(), Some(""));
        assert_eq!(without_key_param("a=1&keyring=2"), None);
        assert_eq!(without_key_param("a=1"), None);
    }

    fn id_of(uri: &str, name: &str, value: &str) -> Option<CredentialId> {
        let mut headers = HeaderMap::new();
        if !name.is_empty() {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        credential_id(&uri.parse().unwrap(), &headers)
    }

    #[test]
    fn every_header_style_names_the_same_secret() {
        let want = Some(CredentialId::from_secret(b"sk-secret"));
        assert_eq!(id_of("/", "authorization", "Bearer sk-secret"), want);
        assert_eq!(id_of("/", "authorization", "bearer  sk-secret "), want);
        assert_eq!(id_of("/", "x-api-key", "sk-secret"), want);
        assert_eq!(id_of("/", "api-key", "sk-secret"), want);
        assert_eq!(id_of("/", "x-goog-api-key", "sk-secret"), want);
        assert_eq!(
            id_of(
                "/v1beta/models/m:generateContent?alt=sse&key=sk-secret",
                "",
                ""
            ),
            want
        );
        assert_eq!(id_of("/", "", ""), None);
        assert_eq!(id_of("/", "authorization", "Bearer "), None);
    }
}
