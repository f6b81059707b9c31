//! [`BudgetExceeded`]: a call refused because a budget cannot hold its worst case.

use std::fmt;
use std::time::SystemTime;

use crate::budgets::BudgetScope;
use crate::ledger::Amount;
use crate::window::{Window, format_rfc3339, unix_secs};

/// A call refused before it was sent: its worst case does not fit in a budget beside what the
/// window has spent and what calls in flight hold. Nothing was sent, nothing was charged.
///
/// ```text
/// budget `acme-daily` (tenant acme) cannot hold this call: $24.99 of $25.00 spent and
/// $0.004 reserved, the call may cost up to $0.0105; it resets at 2025-06-02T00:00:00+02:00
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetExceeded {
    /// The budget's name, as configured.
    pub budget: String,
    /// Which calls it counts.
    pub scope: BudgetScope,
    /// Its window.
    pub window: Window,
    /// The limit that would be passed (dollars or tokens).
    pub limit: Amount,
    /// What the window has spent.
    pub spent: Amount,
    /// What calls in flight hold.
    pub reserved: Amount,
    /// The call's worst case.
    pub requested: Amount,
    /// When spend starts counting from nothing again (a calendar window's end), or, for a
    /// rolling window, when the oldest spend stops counting.
    pub resets_at: SystemTime,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budget `{}` ({}) cannot hold this call: {} of {} spent and {} reserved, the call may cost up to {}; ",
            self.budget, self.scope, self.spent, self.limit, self.reserved, self.requested
        )?;
        let at = format_rfc3339(unix_secs(self.resets_at), self.window.offset());
        match self.window {
            Window::Rolling(_) => write!(f, "its oldest spend stops counting at {at}"),
            _ => write!(f, "it resets at {at}"),
        }
    }
}

impl std::error::Error for BudgetExceeded {}

/// A call refused because the fleet's books in Redis cannot be reached and the books were
/// set to fail closed ([`RedisBooks::with_fail_closed`](crate::RedisBooks::with_fail_closed)).
/// Nothing was sent, nothing was charged; unlike [`BudgetExceeded`], the same call may succeed
/// later, once Redis answers again (it is tried again every
/// [`retry_after`](Self::retry_after)). Its [`source`](std::error::Error::source) is the Redis
/// error.
///
/// ```text
/// budgets unavailable: redis at redis://:***@redis.internal:6379 did not answer (redis did not
/// answer within 250ms); the call may succeed later
/// ```
#[cfg(feature = "redis")]
#[derive(Debug)]
#[non_exhaustive]
pub struct BudgetUnavailable {
    /// Where Redis is, without its password.
    pub url: String,
    /// How often Redis is tried again: the soonest the call may succeed.
    pub retry_after: std::time::Duration,
    pub(crate) source: tollgate_core::BoxError,
}

#[cfg(feature = "redis")]
impl fmt::Display for BudgetUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budgets unavailable: redis at {} did not answer ({}); the call may succeed later",
            self.url, self.source
        )
    }
}

#[cfg(feature = "redis")]
impl std::error::Error for BudgetUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
