//! The cache key: what makes two requests the same request.
//!
//! # What counts
//!
//! A [`CacheKey`] is the SHA-256 of, in order and each framed (tagged, length-prefixed) so
//! that no two lists of parts run together into the same bytes:
//!
//! - the method, the scheme and authority (host and port), the path and the query — less a
//!   `key=` parameter, which is Gemini's credential and is counted as one below;
//! - the provider and the model, as [`AnnotateLayer`](tollgate_core::annotate::AnnotateLayer)
//!   read them;
//! - **who asks**: the request's [`Tenant`], else the layer's, else the credential's id
//!   ([`LlmRequest::credential`], a hash, never the secret), else nothing. One tenant never
//!   sees another's answers; the keys of one tenant share them;
//! - the values of the *vary* headers, those that change an answer without showing in the body
//!   (`anthropic-version`, `anthropic-beta`, `openai-organization`, `openai-project`,
//!   `openai-beta` by default);
//! - the body, canonical: a JSON body is hashed as its value, with object keys in sorted order
//!   and no whitespace, so neither key order nor formatting changes the key; strings count
//!   after unescaping (`"\u0041"` is `"A"`); numbers as parsed (`0.10` is `0.1` and `1e2` is
//!   `100.0`, but `1` and `1.0` stay apart: an integer and a float are not the same to every
//!   server); of a repeated object key the last counts, as parsers read it. The body is
//!   hashed as it is parsed, borrowing its text: no tree of values is built. A body that is
//!   not JSON (or nests deeper than 128) counts byte for byte.
//!
//! Every field of the body counts, `user` and `metadata` included: leaving one out could only
//! ever serve a request an answer made for another, and costs no more than a miss the other
//! way.
//!
//! # Why SHA-256
//!
//! A collision serves one request another's answer — across tenants, if they collide. With a
//! fast non-cryptographic hash (xxh3, SipHash with a known key) a tenant can search for a body
//! that collides with a guessable prompt of another; with SHA-256 nobody can. It costs a few
//! hundred nanoseconds per kilobyte of body, next to the JSON parse that canonical keys need
//! anyway, and the `sha2` crate is already in the tree for credential ids.

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};
use sha2::{Digest, Sha256};
use tollgate_core::LlmRequest;

mod canonical;

/// The identity of a cached response: a SHA-256 over the request's endpoint, model, tenant or
/// credential, vary headers and canonical body (see the [module docs](self)).
///
/// It shows as the first 8 bytes in hex: safe to log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The 32 bytes of the hash.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The whole hash in lowercase hex (64 characters), as the Redis level names it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({}…)", hex(&self.0[..8]))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0[..8]))
    }
}

/// Who a request is made for, when that is not (only) its credential: a request extension, or
/// a layer's default ([`CacheLayer::with_tenant`](crate::CacheLayer::with_tenant)).
///
/// A gateway that calls the provider with one key for many customers sets a tenant per
/// customer, so that one customer's cached answers never reach another. When a tenant is set,
/// it replaces the credential in the key: a tenant's answers are shared by all its keys.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// A tenant named `name` (`"acme"`, a customer id).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({})", self.0)
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The vary headers of a new layer.
pub(crate) const DEFAULT_VARY: [&str; 5] = [
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
    "openai-beta",
];

/// What the key is computed from, borrowed from the request.
pub(crate) struct KeySource<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a Extensions,
    pub(crate) body: &'a [u8],
}

impl KeySource<'_> {
    /// The key, with `tenant` as the layer's default tenant and `vary` as its vary headers.
    pub(crate) fn key(&self, tenant: Option<&Tenant>, vary: &[HeaderName]) -> CacheKey {
        let mut h = Hasher(Sha256::new());
        h.tag(b"tollgate-cache/1");
        h.field(self.method.as_str().as_bytes());
        h.field(self.uri.scheme_str().unwrap_or_default().as_bytes());
        let authority = self.uri.authority().map(|a| a.as_str().as_bytes());
        let host = self.headers.get(http::header::HOST).map(|v| v.as_bytes());
        h.field(authority.or(host).unwrap_or_default());
        h.field(self.uri.path().as_bytes());
        h.query(self.uri.query().unwrap_or_default());
        let llm = self.extensions.get::<LlmRequest>();
        h.field(llm.map_or("", |llm| llm.provider.as_str()).as_bytes());
        h.field(
            llm.and_then(|llm| llm.model.as_deref())
                .unwrap_or_default()
                .as_bytes(),
        );
        let tenant = self.extensions.get::<Tenant>().or(tenant);
        match (tenant, llm.and_then(|llm| llm.credential.as_ref())) {
            (Some(tenant), _) => {
                h.tag(b"t");
                h.field(tenant.as_str().as_bytes());
            }
            (None, Some(credential)) => {
                h.tag(b"c");
                h.field(credential.as_str().as_bytes());
            }
            (None, None) => h.tag(b"-"),
        }
        // The layer's list is the same for every request: its values count, not its names.
        for name in vary {
            let values = self.headers.get_all(name);
            h.len(values.iter().count());
            for value in values {
                h.field(value.as_bytes());
            }
        }
        let mut json = Hasher(h.0.clone());
        json.tag(b"j");
        if canonical::hash(&mut json, self.body).is_ok() {
            h = json;
        } else {
            h.tag(b"r");
            h.field(self.body);
        }
        CacheKey(h.0.finalize().into())
    }
}

/// SHA-256 with framing: every variable-length part is preceded by its length.
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn tag(&mut self, tag: &[u8]) {
        self.0.update(tag);
    }

    /// A length, as a LEB128 varint: one byte below 128, and prefix-free.
    pub(crate) fn len(&mut self, len: usize) {
        let mut buf = [0_u8; 10];
        let mut rest = len as u64;
        let mut used = 0;
        loop {
            let low = (rest & 0x7f) as u8;
            rest >>= 7;
            if rest == 0 {
                buf[used] = low;
                used += 1;
                break;
            }
            buf[used] = low | 0x80;
            used += 1;
        }
        self.0.update(&buf[..used]);
    }

    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.0.update(bytes);
    }

    /// The query, less any `key=` parameter (a credential, counted by its id instead).
    fn query(&mut self, query: &str) {
        let kept = query.split('&').filter(|pair| !pair.starts_with("key="));
        self.len(kept.clone().count());
        for pair in kept {
            self.field(pair.as_bytes());
        }
    }
}

impl fmt::Write for Hasher {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(uri: &str, headers: &[(&str, &str)], body: &[u8]) -> CacheKey {
        let uri: Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let vary: Vec<HeaderName> = DEFAULT_VARY.iter().map(|n| n.parse().unwrap()).collect();
        KeySource {
            method: &Method::POST,
            uri: &uri,
            headers: &map,
            extensions: &Extensions::new(),
            body,
        }
        .key(None, &vary)
    }

    const URL: &str = "https://api.openai.com/v1/chat/completions";

    #[test]
    fn json_formatting_and_key_order_do_not_count() {
        let a = key_of(
            URL,
            &[],
            br#"{"model":"m","temperature":0,"x":{"b":1,"a":[1,2]}}"#,
        );
        let b = key_of(
            URL,
            &[],
            b"{ \"x\" : { \"a\" : [ 1 , 2 ] , \"b\" : 1 } ,\n\t\"temperature\": 0, \"model\": \"m\" }",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            key_of(
                URL,
                &[],
                br#"{"model":"m","temperature":0,"x":{"b":1,"a":[2,1]}}"#
            )
        );
    }

    #[test]
    fn numbers_and_strings_count_by_value() {
        assert_eq!(
            key_of(URL, &[], br#"{"t":0.10}"#),
            key_of(URL, &[], br#"{"t":0.1}"#)
        );
        assert_eq!(
            key_of(URL, &[], br#"{"t":1e2}"#),
            key_of(URL, &[], br#"{"t":100.0}"#)
        );
        assert_ne!(
            key_of(URL, &[], br#"{"t":1}"#),
            key_of(URL, &[], br#"{"t":1.0}"#)
        );
        assert_eq!(
            key_of(URL, &[], br#"{"s":"\u0041"}"#),
            key_of(URL, &[], br#"{"s":"A"}"#)
        );
        // Framing: moving a character between neighbours changes the key.
        assert_ne!(
            key_of(URL, &[], br#"["ab","c"]"#),
            key_of(URL, &[], br#"["a","bc"]"#)
        );
        assert_ne!(
            key_of(URL, &[], br#"{"a":null}"#),
            key_of(URL, &[], br#"{"a":"n"}"#)
        );
    }

    #[test]
    fn endpoint_query_and_vary_headers_count_but_a_query_key_does_not() {
        let body = br#"{"a":1}"#;
        let base = key_of(URL, &[], body);
        assert_ne!(
            base,
            key_of("https://api.openai.com/v1/embeddings", &[], body)
        );
        assert_ne!(
            base,
            key_of("http://localhost:8080/v1/chat/completions", &[], body)
        );
        let gemini = "https://g/v1beta/models/m:generateContent";
        assert_eq!(
            key_of(&format!("{gemini}?key=one"), &[], body),
            key_of(&format!("{gemini}?key=two"), &[], body)
        );
        assert_ne!(
            key_of(&format!("{gemini}?alt=sse"), &[], body),
            key_of(gemini, &[], body)
        );
        let beta = key_of(URL, &[("anthropic-beta", "x")], body);
        assert_ne!(base, beta);
        assert_eq!(base, key_of(URL, &[("user-agent", "x")], body));
    }

    #[test]
    fn non_json_bodies_count_raw() {
        assert_ne!(key_of(URL, &[], b"a b"), key_of(URL, &[], b"a  b"));
        assert_ne!(
            key_of(URL, &[], b"{not json"),
            key_of(URL, &[], b"{not  json")
        );
    }

    #[test]
    fn shown_as_a_short_hash() {
        let key = key_of(URL, &[], b"{}");
        assert_eq!(format!("{key}").len(), 16);
        assert_eq!(key.to_hex().len(), 64);
        assert!(format!("{key:?}").starts_with("CacheKey("));
    }
}
