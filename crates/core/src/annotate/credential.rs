//! Finding the credential a request carries, and naming it without revealing it.

use http::{HeaderMap, Uri};

use crate::CredentialId;

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
