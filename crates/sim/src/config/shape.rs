//! How a per-minute limit is counted: the limiter's shape (`window`) and its burst.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

/// How a per-minute limit is counted: the shape of the provider's limiter. Each dimension of a
/// key (requests, tokens, input and output tokens) gets its own meter of this shape; the
/// per-day request quota is always a bucket of a day's quota, whatever the shape.
///
/// Whatever the shape, a 429 says the true time until the request would be admitted (if
/// nothing else is admitted meanwhile), rounded up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Window {
    /// `"token_bucket"`: a bucket refilled continuously at the per-minute rate, holding a
    /// minute's quota unless a [`burst`](super::Limits::burst) says otherwise, so an idle key
    /// may spend its whole capacity at once, then the rate. OpenAI and Anthropic describe their
    /// limits this way; with a small burst it is the classic token bucket of API gateways.
    #[default]
    TokenBucket,
    /// A duration such as `"10s"` (1 ms to 60 s): fixed windows of this length counted from the
    /// start, each allowing the per-minute quota scaled to it, rounded up, so twice that can
    /// pass around a boundary. Azure OpenAI enforces RPM over 1 s or 10 s windows.
    Fixed(Duration),
    /// `"sliding:60s"` (1 ms to 60 s): at most the per-minute quota scaled to this length in
    /// any trailing window of this length, counted exactly from a log of the admissions (never
    /// more entries than the window's share). The shape of sliding-log limiters in API
    /// gateways and proxies.
    Sliding(Duration),
    /// `"leaky_bucket"`: a leaky bucket as GCRA, spacing admissions at the per-minute rate
    /// (60 s / limit per unit) and allowing [`burst`](super::Limits::burst) units ahead of
    /// schedule; by default one request's worth, i.e. strict spacing, where a request of any
    /// size up to a minute's quota is admitted once the ones before it have drained. nginx's
    /// `limit_req` and GCRA limiters count this way.
    LeakyBucket,
}

impl Window {
    /// Whether [`Limits::burst`](super::Limits::burst) means anything to this shape.
    pub(crate) fn has_burst(self) -> bool {
        matches!(self, Self::TokenBucket | Self::LeakyBucket)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenBucket => f.write_str("token_bucket"),
            Self::LeakyBucket => f.write_str("leaky_bucket"),
            Self::Fixed(window) => write!(f, "{}", humantime::format_duration(*window)),
            Self::Sliding(window) => write!(f, "sliding:{}", humantime::format_duration(*window)),
        }
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = match text.as_str() {
            "token_bucket" => Some(Self::TokenBucket),
            "leaky_bucket" => Some(Self::LeakyBucket),
            _ => match text.strip_prefix("sliding:") {
                Some(length) => humantime::parse_duration(length).ok().map(Self::Sliding),
                None => humantime::parse_duration(&text).ok().map(Self::Fixed),
            },
        };
        parsed.ok_or_else(|| {
            de::Error::custom(format!(
                "window must be \"token_bucket\", \"leaky_bucket\", \"sliding:\" and a duration \
                 such as \"sliding:60s\", or a duration such as \"10s\", not {text:?}"
            ))
        })
    }
}

/// How far ahead of the per-minute rate a `token_bucket` or `leaky_bucket` limit lets a key
/// go, in each dimension's own units (requests, or tokens).
///
/// `burst = 5` is the capacity of a key limited on one per-minute dimension only; a key limited
/// on several gives each its own, `burst = { requests = 5, tokens = 4000 }` (a dimension left
/// out keeps its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Burst {
    /// The burst of the key's only per-minute dimension.
    Units(u64),
    /// A burst per dimension.
    PerDimension(BurstPerDimension),
}

/// A burst per dimension (`burst = { requests = 5, tokens = 4000 }`); each in its own units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurstPerDimension {
    /// Requests (of `requests_per_minute`).
    pub requests: Option<u64>,
    /// Input plus output tokens (of `tokens_per_minute`).
    pub tokens: Option<u64>,
    /// Input tokens (of `input_tokens_per_minute`).
    pub input_tokens: Option<u64>,
    /// Output tokens (of `output_tokens_per_minute`).
    pub output_tokens: Option<u64>,
}

impl fmt::Display for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Units(units) => write!(f, "{units}"),
            Self::PerDimension(each) => {
                let named = [
                    ("requests", each.requests),
                    ("tokens", each.tokens),
                    ("input_tokens", each.input_tokens),
                    ("output_tokens", each.output_tokens),
                ];
                let shown: Vec<String> = named
                    .iter()
                    .filter_map(|(name, units)| units.map(|units| format!("{name} = {units}")))
                    .collect();
                if shown.is_empty() {
                    f.write_str("{}")
                } else {
                    write!(f, "{{ {} }}", shown.join(", "))
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Burst {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BurstVisitor;

        impl<'de> Visitor<'de> for BurstVisitor {
            type Value = Burst;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a burst: a number of units, or a table such as \
                     { requests = 5, tokens = 4000 }",
                )
            }

            fn visit_u64<E: de::Error>(self, units: u64) -> Result<Burst, E> {
                Ok(Burst::Units(units))
            }

            fn visit_i64<E: de::Error>(self, units: i64) -> Result<Burst, E> {
                u64::try_from(units).map(Burst::Units).map_err(|_| {
                    E::custom(format!(
                        "burst must be a positive number of units, not {units}"
                    ))
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Burst, A::Error> {
                BurstPerDimension::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Burst::PerDimension)
            }
        }

        deserializer.deserialize_any(BurstVisitor)
    }
}
