//! What made a call fall back, and the mark on its answer.

use std::fmt;

use tollgate_core::error::CircuitOpen;
use tollgate_core::{Outcome, OutcomeKind};

/// What made a call fall back: the failure of the upstream, in the caller's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Trigger {
    /// The provider is overloaded (529, 503, "Overloaded"), or client-side throttling shed
    /// the call.
    Overloaded,
    /// A circuit breaker refused the call: the upstream has been failing.
    CircuitOpen,
    /// A 429, or a local rate limiter that would have made the call wait past its deadline.
    RateLimited,
    /// No answer in time: a timeout layer, a queue timeout, a 408 or 504.
    Timeout,
    /// No connection could be made: the request was never sent.
    ConnectError,
    /// The connection broke after the request may have been sent, before a response.
    ConnectionLost,
    /// Another 5xx.
    ServerError,
    /// The account is out of quota. Off by default: the caller must hear about it.
    QuotaExhausted,
    /// The credential was refused (401, 403). Off by default: the caller must hear about it.
    AuthError,
    /// The request is wrong: a 4xx, a prompt over the context window, a request too large.
    /// Off by default: the caller must hear about it.
    InvalidRequest,
}

impl Trigger {
    pub(crate) const ALL: [Self; 10] = [
        Self::Overloaded,
        Self::CircuitOpen,
        Self::RateLimited,
        Self::Timeout,
        Self::ConnectError,
        Self::ConnectionLost,
        Self::ServerError,
        Self::QuotaExhausted,
        Self::AuthError,
        Self::InvalidRequest,
    ];

    /// The stable snake_case name, also the value of the degraded header: `"overloaded"`,
    /// `"circuit_open"`, `"rate_limited"`, `"timeout"`, `"connect_error"`, `"connection_lost"`,
    /// `"server_error"`, `"quota_exhausted"`, `"auth_error"`, `"invalid_request"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::CircuitOpen => "circuit_open",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::ConnectionLost => "connection_lost",
            Self::ServerError => "server_error",
            Self::QuotaExhausted => "quota_exhausted",
            Self::AuthError => "auth_error",
            Self::InvalidRequest => "invalid_request",
        }
    }

    /// The trigger an outcome stands for; `None` for a success (and any kind this version does
    /// not know, which never falls back).
    pub fn of(outcome: &Outcome) -> Option<Self> {
        Some(match outcome.kind {
            OutcomeKind::Success => return None,
            OutcomeKind::Overloaded => Self::Overloaded,
            OutcomeKind::RateLimited(_) => Self::RateLimited,
            OutcomeKind::Timeout => Self::Timeout,
            OutcomeKind::ConnectError => Self::ConnectError,
            OutcomeKind::ConnectionLost => Self::ConnectionLost,
            OutcomeKind::ServerError => Self::ServerError,
            OutcomeKind::QuotaExhausted => Self::QuotaExhausted,
            OutcomeKind::AuthError => Self::AuthError,
            OutcomeKind::ClientError
            | OutcomeKind::ContextLengthExceeded
            | OutcomeKind::RequestTooLarge => Self::InvalidRequest,
            _ => return None,
        })
    }

    /// The trigger of an error raised instead of a response, with its outcome: a
    /// [`CircuitOpen`] anywhere in the chain is [`CircuitOpen`](Self::CircuitOpen) (an outcome
    /// of [`Overloaded`](OutcomeKind::Overloaded) to everyone else), the rest as
    /// [`classify_error`](tollgate_core::classify::classify_error) reads it.
    pub fn of_error(error: &(dyn std::error::Error + 'static)) -> (Option<Self>, Outcome) {
        let outcome = tollgate_core::classify::classify_error(error);
        // Also inside an `io::Error`, whose own `source()` skips its payload.
        let is_open = |e: &(dyn std::error::Error + 'static)| {
            e.is::<CircuitOpen>()
                || e.downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::get_ref)
                    .is_some_and(|inner| inner.is::<CircuitOpen>())
        };
        let open = std::iter::successors(Some(error), |&e| e.source())
            .take(32)
            .any(is_open);
        let trigger = if open {
            Some(Self::CircuitOpen)
        } else {
            Self::of(&outcome)
        };
        (trigger, outcome)
    }

    pub(crate) const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mark of an answer that did not come from the upstream: a response extension on every
/// answer of the fallback, and a request extension on the request handed to it (so that it
/// knows why it was asked).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Degraded {
    /// Why the call fell back.
    pub trigger: Trigger,
    /// The upstream's outcome, with its `retry_after` when it had one.
    pub outcome: Outcome,
}

impl Degraded {
    /// A mark for a call that fell back on `trigger`, having failed with `outcome`.
    pub const fn new(trigger: Trigger, outcome: Outcome) -> Self {
        Self { trigger, outcome }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tollgate_core::error::{Overloaded, QueueTimeout, RetriesExhausted};
    use tollgate_core::{BoxError, RateLimitDimension};

    use super::*;

    #[test]
    fn outcomes_name_their_trigger() {
        let of = |kind| Trigger::of(&Outcome::new(kind));
        assert_eq!(of(OutcomeKind::Success), None);
        assert_eq!(
            of(OutcomeKind::RateLimited(RateLimitDimension::Tokens)),
            Some(Trigger::RateLimited)
        );
        assert_eq!(
            of(OutcomeKind::ContextLengthExceeded),
            Some(Trigger::InvalidRequest)
        );
        assert_eq!(
            of(OutcomeKind::RequestTooLarge),
            Some(Trigger::InvalidRequest)
        );
        assert_eq!(
            of(OutcomeKind::QuotaExhausted),
            Some(Trigger::QuotaExhausted)
        );
    }

    #[test]
    fn errors_name_their_trigger() {
        let wait = Some(Duration::from_secs(7));
        let open: BoxError = Box::new(CircuitOpen::new(wait));
        let (trigger, outcome) = Trigger::of_error(open.as_ref());
        assert_eq!(trigger, Some(Trigger::CircuitOpen));
        assert_eq!(outcome.retry_after, wait);
        let wrapped = std::io::Error::other(CircuitOpen::new(None));
        assert_eq!(Trigger::of_error(&wrapped).0, Some(Trigger::CircuitOpen));
        let shed = Overloaded { retry_after: None };
        assert_eq!(Trigger::of_error(&shed).0, Some(Trigger::Overloaded));
        let queued = QueueTimeout {
            waited: Duration::from_secs(1),
        };
        assert_eq!(Trigger::of_error(&queued).0, Some(Trigger::Timeout));
        let exhausted = RetriesExhausted {
            attempts: 3,
            last: Outcome::new(OutcomeKind::AuthError),
        };
        assert_eq!(Trigger::of_error(&exhausted).0, Some(Trigger::AuthError));
    }
}
