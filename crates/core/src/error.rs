//! The small error types every layer shares.
//!
//! Layers return `BoxError`; callers and outer layers downcast to these to learn what happened
//! and how long to wait. They live in core because the retry layer reads `retry_after` from
//! errors raised by the limiter, the breaker and the throttle alike
//! (see [`retry_after_of`]).

use std::fmt;
use std::time::Duration;

use crate::{Outcome, OutcomeKind, RateLimitDimension};

/// The boxed error type at layer boundaries (the same as tower's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn write_wait(f: &mut fmt::Formatter<'_>, retry_after: Option<Duration>) -> fmt::Result {
    match retry_after {
        Some(wait) => write!(f, ", retry after {wait:?}"),
        None => Ok(()),
    }
}

/// The request body is larger than the configured cap; nothing was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyTooLarge {
    /// The cap, in bytes.
    pub limit: usize,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body is larger than the {} byte limit",
            self.limit
        )
    }
}

impl std::error::Error for BodyTooLarge {}

/// The request names a model no provider uses (empty, too long, or with characters outside
/// letters, digits and `- . _ : / @ + = ~`); nothing was sent. See
/// [`check_model_name`](crate::model_name::check_model_name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidModel {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_MODEL_NAME_BYTES`](crate::model_name::MAX_MODEL_NAME_BYTES).
    TooLong {
        /// Its length, in bytes.
        len: usize,
    },
    /// The name holds a character model names do not use.
    Character {
        /// The byte offset of the first such character.
        at: usize,
        /// The character.
        found: char,
    },
}

impl fmt::Display for InvalidModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the model name is not valid: ")?;
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong { len } => write!(
                f,
                "it is {len} bytes long; model names are at most {} bytes",
                crate::model_name::MAX_MODEL_NAME_BYTES
            ),
            Self::Character { at, found } => write!(
                f,
                "it holds U+{:04X} at byte {at}; model names use letters, digits and - . _ : / @ + = ~",
                u32::from(*found)
            ),
        }
    }
}

impl std::error::Error for InvalidModel {}

/// A local rate limit refused the request before it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit that was hit.
    pub dimension: RateLimitDimension,
    /// When the request would fit, if known.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited on {}", self.dimension)?;
        write_wait(f, self.retry_after)
    }
}

impl std::error::Error for RateLimited {}

/// A request that can never fit a limit, however long it waits: its estimate alone exceeds the
/// quota. Nothing was sent; retrying cannot help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceedsLimit {
    /// The limit it exceeds.
    pub dimension: RateLimitDimension,
    /// What the request needs.
    pub requested: u64,
    /// The most the limit ever allows at once.
    pub limit: u64,
}

impl fmt::Display for ExceedsLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request needs {} {} but the limit allows at most {}",
            self.requested, self.dimension, self.limit
        )
    }
}

impl std::error::Error for ExceedsLimit {}

/// The circuit breaker is open: the upstream is failing and calls fail fast.
///
/// A breaker an operator forced open ([`forced`](Self::forced)) will not close by itself, so
/// no retry layer waits for it: it is not retryable. Any other open breaker is (after its
/// `retry_after`, when known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitOpen {
    /// When the breaker will admit probes again, if known.
    pub retry_after: Option<Duration>,
    /// Whether an operator forced it open (it stays open until they reset it).
    pub forced: bool,
}

impl CircuitOpen {
    /// An open (or half-open, busy probing) breaker that admits calls again after
    /// `retry_after`, when known.
    pub const fn new(retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            forced: false,
        }
    }

    /// A breaker forced open by an operator.
    pub const fn forced() -> Self {
        Self {
            retry_after: None,
            forced: true,
        }
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.forced {
            return f.write_str("circuit forced open");
        }
        f.write_str("circuit open")?;
        write_wait(f, self.retry_after)
    }
}

impl std::error::Error for CircuitOpen {}

/// Client-side throttling shed the request because the upstream is overloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overloaded {
    /// A suggested wait, if known.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream overloaded, request shed")?;
        write_wait(f, self.retry_after)
    }
}

impl std::error::Error for Overloaded {}

/// The request's own [`Deadline`](crate::Deadline) ran out while an attempt was under way: the
/// caller's time budget, not the upstream's doing.
///
/// A timeout layer gives it as the [`source()`](std::error::Error::source) of the timeout
/// error it raises when the deadline, rather than one of its own limits, came first; its own
/// source is a `tower::timeout::error::Elapsed`, so it still classifies as a timeout.
/// [`is_deadline_expiry`](crate::classify::is_deadline_expiry) finds it: the adaptive limit and
/// the circuit breaker ignore such a call, as they ignore one the caller cancelled, since a
/// short deadline says nothing about the upstream's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadlineExceeded;

/// What [`DeadlineExceeded`] reports as its cause.
static ELAPSED: tower::timeout::error::Elapsed = tower::timeout::error::Elapsed::new();

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request deadline ran out")
    }
}

impl std::error::Error for DeadlineExceeded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&ELAPSED)
    }
}

/// The request waited in a queue longer than allowed and was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueTimeout {
    /// How long it waited.
    pub waited: Duration,
}

impl fmt::Display for QueueTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gave up after waiting {:?} in the queue", self.waited)
    }
}

impl std::error::Error for QueueTimeout {}

/// Every allowed attempt failed; `last` is the outcome of the final one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetriesExhausted {
    /// How many attempts were made.
    pub attempts: u32,
    /// The outcome of the last attempt.
    pub last: Outcome,
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempts, last: {}",
            self.attempts, self.last
        )
    }
}

impl std::error::Error for RetriesExhausted {}

pub use crate::config::ConfigError;

/// How long the error says to wait before another attempt, for the error types of this module.
pub fn retry_after_of(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    local_outcome(error).and_then(|outcome| outcome.retry_after)
}

/// The [`Outcome`] a Tollgate layer's own rejection stands for, if `error` is one of them.
pub(crate) fn local_outcome(error: &(dyn std::error::Error + 'static)) -> Option<Outcome> {
    if let Some(e) = error.downcast_ref::<RateLimited>() {
        Some(Outcome::new(OutcomeKind::RateLimited(e.dimension)).with_retry_after(e.retry_after))
    } else if let Some(e) = error.downcast_ref::<CircuitOpen>() {
        let outcome = Outcome::new(OutcomeKind::Overloaded).with_retry_after(e.retry_after);
        Some(if e.forced {
            outcome.with_should_retry(Some(false))
        } else {
            outcome
        })
    } else if let Some(e) = error.downcast_ref::<Overloaded>() {
        Some(Outcome::new(OutcomeKind::Overloaded).with_retry_after(e.retry_after))
    } else if error.is::<QueueTimeout>() {
        Some(Outcome::new(OutcomeKind::Timeout))
    } else if error.is::<BodyTooLarge>() || error.is::<ExceedsLimit>() {
        Some(Outcome::new(OutcomeKind::RequestTooLarge))
    } else if error.is::<InvalidModel>() {
        Some(Outcome::new(OutcomeKind::ClientError).with_should_retry(Some(false)))
    } else {
        error
            .downcast_ref::<RetriesExhausted>()
            .map(|e| e.last.clone().with_should_retry(Some(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_and_says_the_wait() {
        let e = RateLimited {
            dimension: RateLimitDimension::Tokens,
            retry_after: Some(Duration::from_millis(250)),
        };
        assert_eq!(e.to_string(), "rate limited on tokens, retry after 250ms");
        assert_eq!(CircuitOpen::new(None).to_string(), "circuit open");
        assert_eq!(CircuitOpen::forced().to_string(), "circuit forced open");
        assert_eq!(
            ConfigError::new("max_body_bytes", 0, "must be at least 1").to_string(),
            "max_body_bytes: 0 must be at least 1"
        );
    }

    #[test]
    fn retry_after_reads_every_local_rejection() {
        let wait = Some(Duration::from_secs(3));
        let errors: Vec<BoxError> = vec![
            Box::new(RateLimited {
                dimension: RateLimitDimension::Requests,
                retry_after: wait,
            }),
            Box::new(CircuitOpen::new(wait)),
            Box::new(Overloaded { retry_after: wait }),
        ];
        for error in errors {
            assert_eq!(retry_after_of(error.as_ref()), wait, "{error}");
        }
        let exhausted = RetriesExhausted {
            attempts: 3,
            last: Outcome::new(OutcomeKind::Timeout),
        };
        assert_eq!(retry_after_of(&exhausted), None);
        let never = ExceedsLimit {
            dimension: RateLimitDimension::Tokens,
            requested: 9,
            limit: 5,
        };
        assert_eq!(
            never.to_string(),
            "request needs 9 tokens but the limit allows at most 5"
        );
        assert_eq!(
            local_outcome(&never).unwrap().kind,
            OutcomeKind::RequestTooLarge
        );
        assert!(!local_outcome(&exhausted).unwrap().is_retryable());
    }
}
