//! The errors a [`TimeoutLayer`](crate::TimeoutLayer) raises.
//!
//! Two places, two meanings:
//!
//! - [`FirstByteTimeout`] is the response future's error: no response arrived in time, so
//!   nothing reached the caller and a retry layer above may try again. Every outer layer reads it
//!   as [`OutcomeKind::Timeout`](tollgate_core::OutcomeKind::Timeout).
//! - [`IdleTimeout`] and [`TotalTimeout`] end a response body the caller is already reading (a
//!   stream that stalled, or one past its total time); a first token that never came after the
//!   headers ends it with a [`FirstByteTimeout`] too. The caller sees them as the body's error;
//!   the layers that wait for the end of the stream (breaker, limiter, overload) see a stream
//!   that failed with a timeout.
//!
//! Each error's [`source()`](std::error::Error::source) is a `tower::timeout::error::Elapsed`,
//! which [`classify_error`](tollgate_core::classify::classify_error) already reads as a
//! timeout: any code that classifies errors the Tollgate way understands these without knowing
//! this crate. When the request's own deadline ran out ([`Limit::Deadline`]), the source is a
//! [`DeadlineExceeded`] (whose source is `Elapsed`), which
//! [`is_deadline_expiry`](tollgate_core::classify::is_deadline_expiry) finds: the caller's
//! budget ran out, which says nothing about the upstream.

use std::fmt;
use std::time::Duration;

use tollgate_core::error::DeadlineExceeded;
use tower::timeout::error::Elapsed;

/// What every error here reports as its cause.
static ELAPSED: Elapsed = Elapsed::new();
/// What an error reports as its cause when the request's deadline ran out (its own cause is
/// `Elapsed`).
static DEADLINE: DeadlineExceeded = DeadlineExceeded;

/// Which limit ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The time to the response headers, or to a stream's first data.
    FirstByte,
    /// The time between two chunks of a body.
    Idle,
    /// The total time of the attempt.
    Total,
    /// The request's own [`Deadline`](tollgate_core::Deadline), shared with a retry layer.
    Deadline,
}

impl Limit {
    /// The stable snake_case name: `"first_byte"`, `"idle"`, `"total"`, `"deadline"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FirstByte => "first_byte",
            Self::Idle => "idle",
            Self::Total => "total",
            Self::Deadline => "deadline",
        }
    }

    /// The error's cause: the request's [`DeadlineExceeded`] when its deadline ran out (the
    /// caller's budget, which the breaker and the adaptive limit ignore), else `Elapsed`.
    fn cause(self) -> Option<&'static (dyn std::error::Error + 'static)> {
        match self {
            Self::Deadline => Some(&DEADLINE),
            _ => Some(&ELAPSED),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::FirstByte => "the first-byte limit",
            Self::Idle => "the idle limit",
            Self::Total => "the total limit",
            Self::Deadline => "the request deadline",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Nothing came back in time: no response headers, or, for a stream, no first data after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstByteTimeout {
    /// How long the attempt waited, from the call.
    pub waited: Duration,
    /// The limit that ran out: [`FirstByte`](Limit::FirstByte), or the total time or the
    /// request's deadline when they came first.
    pub limit: Limit,
}

impl fmt::Display for FirstByteTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no response after {:?} ({} ran out)",
            self.waited,
            self.limit.describe()
        )
    }
}

impl std::error::Error for FirstByteTimeout {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.limit.cause()
    }
}

/// A body went silent: no chunk for longer than the idle limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeout {
    /// How long it was silent.
    pub idle: Duration,
    /// Body bytes received before it went silent.
    pub bytes: u64,
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response body stalled: no data for {:?} after {} bytes",
            self.idle, self.bytes
        )
    }
}

impl std::error::Error for IdleTimeout {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&ELAPSED)
    }
}

/// A body was still arriving when the attempt's total time or the request's deadline ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TotalTimeout {
    /// The time since the call.
    pub elapsed: Duration,
    /// Body bytes received by then.
    pub bytes: u64,
    /// [`Total`](Limit::Total) or [`Deadline`](Limit::Deadline).
    pub limit: Limit,
}

impl fmt::Display for TotalTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response body unfinished after {:?} and {} bytes ({} ran out)",
            self.elapsed,
            self.bytes,
            self.limit.describe()
        )
    }
}

impl std::error::Error for TotalTimeout {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.limit.cause()
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::classify::classify_error;
    use tollgate_core::{BoxError, OutcomeKind};

    use super::*;

    #[test]
    fn every_error_classifies_as_a_timeout() {
        let errors: [BoxError; 3] = [
            Box::new(FirstByteTimeout {
                waited: Duration::from_secs(30),
                limit: Limit::FirstByte,
            }),
            Box::new(IdleTimeout {
                idle: Duration::from_secs(5),
                bytes: 120,
            }),
            Box::new(TotalTimeout {
                elapsed: Duration::from_secs(90),
                bytes: 4_000,
                limit: Limit::Deadline,
            }),
        ];
        for error in &errors {
            let outcome = classify_error(error.as_ref());
            assert_eq!(outcome.kind, OutcomeKind::Timeout, "{error}");
            assert!(outcome.is_retryable());
        }
        // Carried inside an io::Error (as hyper does with a body error), still a timeout.
        let wrapped = std::io::Error::other(IdleTimeout {
            idle: Duration::from_secs(1),
            bytes: 0,
        });
        assert_eq!(classify_error(&wrapped).kind, OutcomeKind::Timeout);
    }

    #[test]
    fn only_the_requests_own_deadline_is_a_deadline_expiry() {
        use tollgate_core::classify::is_deadline_expiry;

        let deadline = |limit| FirstByteTimeout {
            waited: Duration::from_secs(1),
            limit,
        };
        assert!(is_deadline_expiry(&deadline(Limit::Deadline)));
        assert!(!is_deadline_expiry(&deadline(Limit::FirstByte)));
        assert!(!is_deadline_expiry(&deadline(Limit::Total)));
        let total = TotalTimeout {
            elapsed: Duration::from_secs(9),
            bytes: 10,
            limit: Limit::Deadline,
        };
        assert!(is_deadline_expiry(&total));
        assert!(!is_deadline_expiry(&TotalTimeout {
            limit: Limit::Total,
            ..total
        }));
        let idle = IdleTimeout {
            idle: Duration::from_secs(1),
            bytes: 0,
        };
        assert!(!is_deadline_expiry(&idle));
    }

    #[test]
    fn display_is_lowercase_and_says_which_limit() {
        let error = FirstByteTimeout {
            waited: Duration::from_millis(1500),
            limit: Limit::Deadline,
        };
        assert_eq!(
            error.to_string(),
            "no response after 1.5s (the request deadline ran out)"
        );
        let idle = IdleTimeout {
            idle: Duration::from_secs(5),
            bytes: 42,
        };
        assert_eq!(
            idle.to_string(),
            "response body stalled: no data for 5s after 42 bytes"
        );
        assert_eq!(Limit::FirstByte.to_string(), "first_byte");
    }
}
