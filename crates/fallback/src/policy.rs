//! When a call falls back.

use std::fmt;

use tollgate_core::Outcome;

use crate::trigger::Trigger;

/// Decides whether a failed call is answered by the fallback.
///
/// [`Triggers`] (a set) is the usual policy; a closure
/// `Fn(Trigger, &Outcome) -> bool` is one too — to fall back on a 429 only when its wait is
/// long, say.
pub trait FallbackPolicy: Clone + Send + Sync + 'static {
    /// Whether a call that failed with `outcome` (`trigger` in short) falls back.
    fn falls_back(&self, trigger: Trigger, outcome: &Outcome) -> bool;
}

impl<F> FallbackPolicy for F
where
    F: Fn(Trigger, &Outcome) -> bool + Clone + Send + Sync + 'static,
{
    fn falls_back(&self, trigger: Trigger, outcome: &Outcome) -> bool {
        self(trigger, outcome)
    }
}

/// A set of [`Trigger`]s that fall back.
///
/// [`Default`]: the upstream is unavailable — overloaded, circuit open, rate limited (after
/// whatever waiting the layers below allowed), timeout, connect error, connection lost, server
/// error. Never, unless
/// added: an exhausted quota, a refused credential, an invalid request — errors the caller must
/// see, because only the caller can fix them.
///
/// ```
/// use tollgate_fallback::{Trigger, Triggers};
///
/// let triggers = Triggers::default()
///     .without(Trigger::RateLimited)
///     .with(Trigger::QuotaExhausted);
/// assert!(triggers.contains(Trigger::QuotaExhausted));
/// assert!(!triggers.contains(Trigger::AuthError));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(from = "Vec<Trigger>", into = "Vec<Trigger>"))]
pub struct Triggers {
    bits: u16,
}

impl Triggers {
    /// No trigger: never falls back.
    pub const fn none() -> Self {
        Self { bits: 0 }
    }

    /// Every trigger, including the errors the caller should see.
    pub const fn all() -> Self {
        let mut set = Self::none();
        let mut i = 0;
        while i < Trigger::ALL.len() {
            set = set.with(Trigger::ALL[i]);
            i += 1;
        }
        set
    }

    /// Also falls back on `trigger`.
    pub const fn with(mut self, trigger: Trigger) -> Self {
        self.bits |= trigger.bit();
        self
    }

    /// No longer falls back on `trigger`.
    pub const fn without(mut self, trigger: Trigger) -> Self {
        self.bits &= !trigger.bit();
        self
    }

    /// Whether `trigger` falls back.
    pub const fn contains(self, trigger: Trigger) -> bool {
        self.bits & trigger.bit() != 0
    }

    /// The triggers in the set.
    pub fn iter(self) -> impl Iterator<Item = Trigger> {
        Trigger::ALL.into_iter().filter(move |t| self.contains(*t))
    }
}

impl Triggers {
    /// The [default](Self::default), in a `const` context.
    pub(crate) const fn standard() -> Self {
        Self::none()
            .with(Trigger::Overloaded)
            .with(Trigger::CircuitOpen)
            .with(Trigger::RateLimited)
            .with(Trigger::Timeout)
            .with(Trigger::ConnectError)
            .with(Trigger::ConnectionLost)
            .with(Trigger::ServerError)
    }
}

impl Default for Triggers {
    fn default() -> Self {
        Self::standard()
    }
}

impl FromIterator<Trigger> for Triggers {
    fn from_iter<I: IntoIterator<Item = Trigger>>(iter: I) -> Self {
        iter.into_iter().fold(Self::none(), Self::with)
    }
}

impl From<Triggers> for Vec<Trigger> {
    fn from(triggers: Triggers) -> Self {
        triggers.iter().collect()
    }
}

impl From<Vec<Trigger>> for Triggers {
    fn from(triggers: Vec<Trigger>) -> Self {
        triggers.into_iter().collect()
    }
}

impl fmt::Debug for Triggers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FallbackPolicy for Triggers {
    fn falls_back(&self, trigger: Trigger, _: &Outcome) -> bool {
        self.contains(trigger)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tollgate_core::{OutcomeKind, RateLimitDimension};

    use super::*;

    #[test]
    fn the_default_falls_back_only_when_the_upstream_is_unavailable() {
        let triggers = Triggers::default();
        let expected = [
            (Trigger::Overloaded, true),
            (Trigger::CircuitOpen, true),
            (Trigger::RateLimited, true),
            (Trigger::Timeout, true),
            (Trigger::ConnectError, true),
            (Trigger::ConnectionLost, true),
            (Trigger::ServerError, true),
            (Trigger::QuotaExhausted, false),
            (Trigger::AuthError, false),
            (Trigger::InvalidRequest, false),
        ];
        for (trigger, falls_back) in expected {
            assert_eq!(triggers.contains(trigger), falls_back, "{trigger}");
        }
        assert_eq!(Triggers::all().iter().count(), 10);
        assert_eq!(Triggers::none().iter().count(), 0);
        assert_eq!(
            format!("{:?}", Triggers::none().with(Trigger::Timeout)),
            "{Timeout}"
        );
    }

    #[test]
    fn closures_are_policies() {
        let long_waits_only = |trigger: Trigger, outcome: &Outcome| {
            trigger != Trigger::RateLimited
                || outcome
                    .retry_after
                    .is_none_or(|wait| wait > Duration::from_secs(10))
        };
        let short = Outcome::new(OutcomeKind::RateLimited(RateLimitDimension::Requests))
            .with_retry_after(Some(Duration::from_secs(1)));
        assert!(!long_waits_only.falls_back(Trigger::RateLimited, &short));
        assert!(long_waits_only.falls_back(Trigger::Timeout, &short));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn triggers_load_from_names() {
        let triggers: Triggers =
            serde_json::from_str(r#"["circuit_open", "timeout", "quota_exhausted"]"#).unwrap();
        assert_eq!(
            triggers,
            Triggers::none()
                .with(Trigger::CircuitOpen)
                .with(Trigger::Timeout)
                .with(Trigger::QuotaExhausted)
        );
        assert!(serde_json::from_str::<Triggers>(r#"["circuit_closed"]"#).is_err());
    }
}
