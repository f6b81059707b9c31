//! Which requests may share one merged call: those the codec says can merge, carrying the
//! same headers that change what the upstream does.
//!
//! The merged call goes out with the first member's head. Were requests with different
//! `anthropic-version`, `openai-beta` or API keys merged, every member would be answered as the
//! first one asked. So the group key holds, besides the codec's key, every header of the
//! request except those that only describe or trace it ([`NEUTRAL`]).

use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers that do not change the upstream's answer: they describe the client or trace the
/// call, and differ from request to request.
const NEUTRAL: [&str; 8] = [
    "content-length",
    "user-agent",
    "x-request-id",
    "traceparent",
    "tracestate",
    "accept-encoding",
    "x-stainless-",
    "x-tollgate-",
];

fn neutral(name: &HeaderName) -> bool {
    NEUTRAL.iter().any(|n| {
        if n.ends_with('-') {
            name.as_str().starts_with(n)
        } else {
            name == n
        }
    })
}

/// A codec's key and the request's behaviour-changing headers (sorted, so their order does
/// not matter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey<K> {
    codec: K,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl<K> GroupKey<K> {
    pub(crate) fn new(codec: K, headers: &HeaderMap) -> Self {
        let mut kept: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .filter(|(name, _)| !neutral(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        kept.sort_unstable_by(|a, b| {
            (a.0.as_str(), a.1.as_bytes()).cmp(&(b.0.as_str(), b.1.as_bytes()))
        });
        Self {
            codec,
            headers: kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(headers: &[(&'static str, &'static str)]) -> GroupKey<u8> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        GroupKey::new(0, &map)
    }

    #[test]
    fn behaviour_changing_headers_split_groups_and_descriptive_ones_do_not() {
        let base = key(&[("anthropic-version", "2023-06-01"), ("user-agent", "a")]);
        assert_eq!(
            base,
            key(&[
                ("user-agent", "b"),
                ("x-stainless-lang", "python"),
                ("anthropic-version", "2023-06-01"),
                ("x-request-id", "r-1"),
            ])
        );
        assert_ne!(base, key(&[("anthropic-version", "2024-01-01")]));
        assert_ne!(
            base,
            key(&[("anthropic-version", "2023-06-01"), ("openai-beta", "x")])
        );
        assert_ne!(
            key(&[("authorization", "Bearer a")]),
            key(&[("authorization", "Bearer b")])
        );
        assert_eq!(
            key(&[("a-h", "1"), ("b-h", "2")]),
            key(&[("b-h", "2"), ("a-h", "1")]),
            "order does not matter"
        );
    }
}
