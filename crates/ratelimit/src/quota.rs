//! What is limited: dimensions, quotas, and which scopes get which.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use tollgate_core::{Provider, RateLimitDimension, Scope};

/// One thing a provider limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests per minute.
    Requests,
    /// Input plus output tokens per minute.
    Tokens,
    /// Input tokens per minute.
    InputTokens,
    /// Output tokens per minute.
    OutputTokens,
    /// Requests per day.
    RequestsPerDay,
}

impl Dimension {
    /// Every dimension, in index order.
    pub const ALL: [Self; 5] = [
        Self::Requests,
        Self::Tokens,
        Self::InputTokens,
        Self::OutputTokens,
        Self::RequestsPerDay,
    ];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
            Self::RequestsPerDay => "requests_per_day",
        }
    }

    /// The dimension in the words of `tollgate-core`'s outcomes and errors.
    pub const fn to_core(self) -> RateLimitDimension {
        match self {
            Self::Requests | Self::RequestsPerDay => RateLimitDimension::Requests,
            Self::Tokens => RateLimitDimension::Tokens,
            Self::InputTokens => RateLimitDimension::InputTokens,
            Self::OutputTokens => RateLimitDimension::OutputTokens,
        }
    }

    /// The dimensions a provider's rate-limited outcome names (every per-minute one when it
    /// did not say).
    pub(crate) fn from_core(dimension: RateLimitDimension) -> &'static [Self] {
        match dimension {
            RateLimitDimension::Requests => &[Self::Requests],
            RateLimitDimension::Tokens => &[Self::Tokens],
            RateLimitDimension::InputTokens => &[Self::InputTokens],
            RateLimitDimension::OutputTokens => &[Self::OutputTokens],
            RateLimitDimension::Unknown => &[
                Self::Requests,
                Self::Tokens,
                Self::InputTokens,
                Self::OutputTokens,
            ],
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `limit` units per `period`, enforced as a GCRA (a token bucket that holds one period's
/// quota and refills continuously).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: NonZeroU64,
    period: Duration,
}

impl Quota {
    /// `limit` per `period`.
    ///
    /// # Panics
    ///
    /// When `period` is zero or longer than 584 years (it must fit `u64` nanoseconds).
    pub fn new(limit: NonZeroU64, period: Duration) -> Self {
        assert!(
            !period.is_zero() && u64::try_from(period.as_nanos()).is_ok(),
            "a quota period must be positive and fit in u64 nanoseconds"
        );
        Self { limit, period }
    }

    /// `limit` per minute.
    pub fn per_minute(limit: NonZeroU64) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` per day.
    pub fn per_day(limit: NonZeroU64) -> Self {
        Self::new(limit, Duration::from_secs(24 * 60 * 60))
    }

    /// The number of units per period.
    pub const fn limit(&self) -> u64 {
        self.limit.get()
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// Nanoseconds per unit, rounded up so that the quota is never exceeded.
    pub(crate) fn interval_nanos(&self) -> u64 {
        let period = self.period.as_nanos() as u64;
        period.div_ceil(self.limit.get()).max(1)
    }

    /// The period in nanoseconds.
    #[cfg(test)]
    pub(crate) fn period_nanos(&self) -> u64 {
        self.period.as_nanos() as u64
    }
}

/// The quota of each dimension of one scope; `None` is unlimited (or learned from the
/// provider's headers, when the layer is told to).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Quotas {
    /// Requests per minute.
    pub requests_per_minute: Option<NonZeroU64>,
    /// Input plus output tokens per minute.
    pub tokens_per_minute: Option<NonZeroU64>,
    /// Input tokens per minute.
    pub input_tokens_per_minute: Option<NonZeroU64>,
    /// Output tokens per minute.
    pub output_tokens_per_minute: Option<NonZeroU64>,
    /// Requests per day.
    pub requests_per_day: Option<NonZeroU64>,
    /// At least this long between two requests, whatever the minute allows: a pace with no
    /// burst (for a free tier that refuses two calls close together).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "tollgate_core::config::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub min_interval: Option<Duration>,
}

impl Quotas {
    /// No limits.
    pub const fn unlimited() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
            requests_per_day: None,
            min_interval: None,
        }
    }

    /// Requests and tokens per minute, OpenAI-style. A zero means no limit on that dimension.
    pub fn per_minute(requests: u64, tokens: u64) -> Self {
        Self {
            requests_per_minute: NonZeroU64::new(requests),
            tokens_per_minute: NonZeroU64::new(tokens),
            ..Self::unlimited()
        }
    }

    /// Sets input and output tokens per minute, Anthropic-style (zero: no limit).
    pub fn with_input_output(mut self, input: u64, output: u64) -> Self {
        self.input_tokens_per_minute = NonZeroU64::new(input);
        self.output_tokens_per_minute = NonZeroU64::new(output);
        self
    }

    /// Sets requests per day (zero: no limit).
    pub fn with_requests_per_day(mut self, requests: u64) -> Self {
        self.requests_per_day = NonZeroU64::new(requests);
        self
    }

    /// The quota of `dimension`, if limited.
    pub fn get(&self, dimension: Dimension) -> Option<Quota> {
        match dimension {
            Dimension::Requests => {
                let per_minute = self.requests_per_minute.map(Quota::per_minute);
                let paced = self
                    .min_interval
                    .filter(|i| !i.is_zero() && u64::try_from(i.as_nanos()).is_ok())
                    .map(|interval| Quota::new(NonZeroU64::MIN, interval));
                // The slower of the two: both must hold.
                match (per_minute, paced) {
                    (Some(a), Some(b)) => Some(if a.interval_nanos() >= b.interval_nanos() {
                        a
                    } else {
                        b
                    }),
                    (a, b) => a.or(b),
                }
            }
            Dimension::Tokens => self.tokens_per_minute.map(Quota::per_minute),
            Dimension::InputTokens => self.input_tokens_per_minute.map(Quota::per_minute),
            Dimension::OutputTokens => self.output_tokens_per_minute.map(Quota::per_minute),
            Dimension::RequestsPerDay => self.requests_per_day.map(Quota::per_day),
        }
    }
}

/// Which scopes a [`Quotas`] applies to: every part that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ScopeMatch {
    /// The provider.
    pub provider: Option<Provider>,
    /// The credential id (`key-…` or a name given with `CredentialId::named`).
    pub credential: Option<Arc<str>>,
    /// The model (or deployment).
    pub model: Option<Arc<str>>,
}

impl ScopeMatch {
    /// Matches every scope.
    pub fn any() -> Self {
        Self::default()
    }

    /// Matches scopes of `model`.
    pub fn model(model: impl Into<Arc<str>>) -> Self {
        Self {
            model: Some(model.into()),
            ..Self::default()
        }
    }

    /// Also requires `credential`.
    pub fn with_credential(mut self, credential: impl Into<Arc<str>>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// Also requires `provider`.
    pub fn with_provider(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Whether `scope` matches.
    pub fn matches(&self, scope: &Scope) -> bool {
        self.provider.is_none_or(|p| p == scope.provider())
            && self
                .credential
                .as_deref()
                .is_none_or(|c| scope.credential().is_some_and(|id| id.as_str() == c))
            && self
                .model
                .as_deref()
                .is_none_or(|m| scope.model() == Some(m))
    }
}

/// The quotas of every scope: a default, and overrides chosen by the first [`ScopeMatch`] that
/// matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaTable {
    default: Quotas,
    overrides: Vec<(ScopeMatch, Quotas)>,
}

impl QuotaTable {
    /// Every scope gets `default`.
    pub fn new(default: Quotas) -> Self {
        Self {
            default,
            overrides: Vec::new(),
        }
    }

    /// Scopes that `matcher` matches get `quotas` (earlier overrides win).
    pub fn with(mut self, matcher: ScopeMatch, quotas: Quotas) -> Self {
        self.overrides.push((matcher, quotas));
        self
    }

    /// The quotas of `scope`.
    pub fn quotas_for(&self, scope: &Scope) -> Quotas {
        self.overrides
            .iter()
            .find(|(matcher, _)| matcher.matches(scope))
            .map_or(self.default, |(_, quotas)| *quotas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::CredentialId;

    #[test]
    fn a_minimum_interval_paces_requests_unless_the_minute_is_slower() {
        let paced = Quotas {
            min_interval: Some(Duration::from_secs(2)),
            ..Quotas::per_minute(600, 0)
        };
        let quota = paced.get(Dimension::Requests).unwrap();
        assert_eq!((quota.limit(), quota.period()), (1, Duration::from_secs(2)));
        let slower = Quotas {
            min_interval: Some(Duration::from_millis(10)),
            ..Quotas::per_minute(6, 0)
        };
        assert_eq!(
            slower.get(Dimension::Requests),
            Some(Quota::per_minute(NonZeroU64::new(6).unwrap()))
        );
    }

    #[test]
    fn intervals_round_up_so_the_quota_holds() {
        let q = Quota::per_minute(NonZeroU64::new(7).unwrap());
        assert_eq!(q.interval_nanos(), 8_571_428_572);
        assert!(q.interval_nanos() * 7 >= q.period_nanos());
        let q = Quota::per_minute(NonZeroU64::new(100_000).unwrap());
        assert_eq!(q.interval_nanos(), 600_000);
    }

    #[test]
    fn scope_matching() {
        let scope = Scope::new(Provider::OpenAi)
            .with_credential(Some(CredentialId::named("team-a")))
            .with_model(Some("gpt-4o".into()));
        assert!(ScopeMatch::any().matches(&scope));
        assert!(
            ScopeMatch::model("gpt-4o")
                .with_credential("team-a")
                .matches(&scope)
        );
        assert!(!ScopeMatch::model("gpt-4o-mini").matches(&scope));
        assert!(
            !ScopeMatch::any()
                .with_provider(Provider::Anthropic)
                .matches(&scope)
        );
        assert!(!ScopeMatch::any().with_credential("team-b").matches(&scope));

        let table = QuotaTable::new(Quotas::per_minute(10, 0))
            .with(ScopeMatch::model("gpt-4o"), Quotas::per_minute(500, 30_000))
            .with(ScopeMatch::any(), Quotas::per_minute(1, 1));
        assert_eq!(table.quotas_for(&scope), Quotas::per_minute(500, 30_000));
        let other = Scope::new(Provider::OpenAi).with_model(Some("o3".into()));
        assert_eq!(table.quotas_for(&other), Quotas::per_minute(1, 1));
    }
}
