//! What crosses the gateway besides the body: which request headers go upstream, which
//! response headers come back, and which paths are forwarded at all.
//!
//! - **Request headers: an allow-list.** A header the gateway does not know may change what
//!   the upstream does with the gateway's key: `OpenAI-Organization` and `OpenAI-Project` pick
//!   which organisation and project the key bills. Only [`DEFAULT_FORWARDED`] and the names in
//!   `server.forward_headers` go upstream (a name ending in `*` is a prefix).
//! - **Response headers**: hop-by-hop headers, `set-cookie` and the upstream's organisation and
//!   project ids stay at the gateway.
//! - **Paths**: a path with a `.` or `..` segment, or an encoded `/`, `\` or `.`, is refused
//!   with a 400. Forwarded verbatim, `/v1/../sim/stats` reached the upstream, and an upstream
//!   that normalises paths lets a client leave the base URL's prefix.

use http::{HeaderMap, HeaderName, header};
use tollgate_core::credential::CREDENTIAL_HEADERS;

/// Request headers forwarded by default: content negotiation, the providers' API versions and
/// beta flags, the SDKs' own descriptions of themselves, and request ids.
pub(crate) const DEFAULT_FORWARDED: [&str; 8] = [
    "accept",
    "content-type",
    "user-agent",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "x-stainless-*",
    "x-request-id",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1), and `host` and `content-length`, which each side sets
/// for itself.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Upstream response headers a client never sees.
const RESPONSE_WITHHELD: [&str; 4] = [
    "set-cookie",
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
];

/// Which request headers go upstream.
#[derive(Clone, Debug)]
pub(crate) struct ForwardedHeaders {
    exact: Vec<HeaderName>,
    prefixes: Vec<String>,
}

impl ForwardedHeaders {
    /// [`DEFAULT_FORWARDED`] and `extra` (names; `x-acme-*` is a prefix). The error says why
    /// the first unusable name is refused: not a header name, or one that carries a
    /// credential (those are never forwarded: the gateway sends the upstream key itself).
    pub(crate) fn new<'a>(extra: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for name in DEFAULT_FORWARDED.into_iter().chain(extra) {
            let lower = name.trim().to_ascii_lowercase();
            let not_a_name =
                || format!("{name:?} is not a header name (a trailing * makes a prefix)");
            let (stem, prefix) = match lower.strip_suffix('*') {
                Some(stem) => (stem, true),
                None => (lower.as_str(), false),
            };
            if stem.is_empty() || HeaderName::try_from(stem).is_err() {
                return Err(not_a_name());
            }
            // The gateway key beside a passed-through provider key is a credential too.
            if CREDENTIAL_HEADERS
                .iter()
                .chain(&["x-tollgate-key"])
                .any(|c| {
                    if prefix {
                        c.starts_with(stem)
                    } else {
                        *c == stem
                    }
                })
            {
                return Err(format!(
                    "{name:?} carries a credential: never forwarded (the gateway sends the \
                     upstream key itself)"
                ));
            }
            if prefix {
                prefixes.push(stem.to_owned());
            } else {
                exact.push(HeaderName::try_from(stem).map_err(|_| not_a_name())?);
            }
        }
        Ok(Self { exact, prefixes })
    }

    /// Whether `name` goes upstream.
    pub(crate) fn allows(&self, name: &HeaderName) -> bool {
        self.exact.contains(name) || self.prefixes.iter().any(|p| name.as_str().starts_with(p))
    }

    /// The client's headers that go upstream: the allowed ones, without those the client's
    /// `Connection` header names as hop-by-hop.
    pub(crate) fn filter(&self, headers: &HeaderMap) -> HeaderMap {
        let hop = connection_listed(headers);
        let mut kept = HeaderMap::with_capacity(headers.len().min(16));
        for (name, value) in headers {
            if self.allows(name) && !hop.contains(name) && !HOP_BY_HOP.contains(&name.as_str()) {
                kept.append(name.clone(), value.clone());
            }
        }
        kept
    }
}

/// The names a `Connection` header lists.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect()
}

/// An upstream response's headers as the client gets them.
pub(crate) fn filter_response(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.into_iter().chain(RESPONSE_WITHHELD) {
        headers.remove(name);
    }
}

/// Why a path is not forwarded, if it is not. Reads the path in place (it runs for every
/// request).
pub(crate) fn path_problem(path: &str) -> Option<&'static str> {
    let bytes = path.as_bytes();
    let encoded = |at: usize, code: &[u8; 2]| {
        bytes
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.eq_ignore_ascii_case(code))
    };
    let slash = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\\' || (b == b'%' && (encoded(i, b"2f") || encoded(i, b"5c"))));
    if slash {
        return Some("the path holds an encoded or literal slash or backslash");
    }
    let dot_segment = path.split('/').any(|segment| {
        // A segment of one or two dots, each written as `.` or `%2e`.
        let mut rest = segment.as_bytes();
        let mut dots = 0;
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3 && rest[0] == b'%' && rest[1..3].eq_ignore_ascii_case(b"2e") {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    });
    dot_segment.then_some("the path holds a . or .. segment")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_allowed_headers_go_upstream() {
        let forwarded = ForwardedHeaders::new(["x-acme-trace", "x-team-*"]).unwrap();
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-lang", "python"),
            ("openai-organization", "org-victim"),
            ("openai-project", "proj-victim"),
            ("cookie", "session=1"),
            ("x-acme-trace", "t"),
            ("x-team-id", "a"),
            ("connection", "keep-alive, x-request-id"),
            ("x-request-id", "hop"),
            ("transfer-encoding", "chunked"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let kept = forwarded.filter(&headers);
        let mut names: Vec<_> = kept.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "anthropic-version",
                "content-type",
                "x-acme-trace",
                "x-stainless-lang",
                "x-team-id"
            ]
        );
        assert!(ForwardedHeaders::new(["bad name"]).is_err());
        assert!(ForwardedHeaders::new(["*"]).is_err());
        for credential in [
            "x-tollgate-key",
            "Authorization",
            "x-api-key",
            "api-key",
            "x-goog-*",
            "cookie",
        ] {
            let error = ForwardedHeaders::new([credential]).unwrap_err();
            assert!(error.contains("credential"), "{error}");
        }
    }

    #[test]
    fn organisation_ids_and_cookies_stay_at_the_gateway() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("set-cookie", "__cf_bm=1"),
            ("openai-organization", "org-1"),
            ("anthropic-organization-id", "o-1"),
            ("x-ratelimit-remaining-requests", "9"),
            ("transfer-encoding", "chunked"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        filter_response(&mut headers);
        let names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-ratelimit-remaining-requests"]);
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_refused() {
        for path in [
            "/v1/../sim/stats",
            "/v1/./models",
            "/v1/%2e%2E/sim",
            "/v1/.%2e/sim",
            "/v1/models%2Fx",
            "/v1/models%5cx",
            "/v1/models\\x",
            "/v1/..",
        ] {
            assert!(path_problem(path).is_some(), "{path}");
        }
        for path in [
            "/v1/chat/completions",
            "/v1/models/gpt-4o",
            "/v1/files/file-abc.jsonl",
            "/v1/models/gemini-2.0-flash:generateContent",
            "/v1/a..b",
            "/v1/.../x",
            "/v1/models/ft%3Agpt",
        ] {
            assert_eq!(path_problem(path), None, "{path}");
        }
    }
}
