//! Health counters shared by the fleet: each process adds what its calls to a member met to
//! the fleet's counts in Redis, reads the counts back, and takes in what the other processes'
//! calls met (so a member failing for one replica loses score on all of them, before they
//! send it a call of their own).
//!
//! A member's counts are a hash, `{<prefix>}:counters:<member>`, of the fields in [`FIELDS`],
//! kept a day after its last write. Every sync interval one pipeline sends each member's
//! increments since the last time (`HINCRBY`) and reads every member's counts (`HMGET`); what
//! the counts grew by, less this process's own increments, is what the others' calls met.
//! After a failed exchange (or a Redis that lost the counts) the next read only takes the
//! counts in: outcomes from before the gap move no average. An exchange that timed out after
//! Redis applied it is sent again, so the fleet's counts may count a few calls twice.

use tollgate_core::redis::Link;

use crate::health::{Counters, Elsewhere, Health};

/// How long Redis keeps a member's counts after their last write.
pub(super) const MEMORY_MILLIS: u64 = 24 * 3600 * 1000;

/// The fields of a member's counts, in [`Tally`]'s order.
pub(super) const FIELDS: [&str; 9] = [
    "calls",
    "successes",
    "rate_limited",
    "timeouts",
    "server_errors",
    "auth_errors",
    "quota_exhausted",
    "breaker_open",
    "latency_us",
];

/// A member's counts, as the fleet adds them up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally([u64; FIELDS.len()]);

impl Tally {
    /// This process's counts of a member.
    pub(super) fn of(health: &Health) -> Self {
        let c = &health.counters;
        Self([
            c.calls,
            c.successes,
            c.rate_limited,
            c.timeouts,
            c.server_errors,
            c.auth_errors,
            c.quota_exhausted,
            c.breaker_open,
            health.latency_micros,
        ])
    }

    /// How much `self` grew since `earlier`; `None` when a count went down (Redis lost them).
    pub(super) fn since(self, earlier: Self) -> Option<Self> {
        let mut grown = [0; FIELDS.len()];
        for ((grown, now), then) in grown.iter_mut().zip(self.0).zip(earlier.0) {
            *grown = now.checked_sub(then)?;
        }
        Some(Self(grown))
    }

    /// What a hash's `HMGET` of [`FIELDS`] gave (absent fields are zero).
    fn read(values: &[Option<u64>]) -> Self {
        let mut tally = [0; FIELDS.len()];
        for (count, value) in tally.iter_mut().zip(values) {
            *count = value.unwrap_or(0);
        }
        Self(tally)
    }

    pub(super) fn is_zero(self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }

    /// As the pool reports counters.
    pub(super) fn counters(self) -> Counters {
        let [
            calls,
            successes,
            rate_limited,
            timeouts,
            server_errors,
            auth_errors,
            quota_exhausted,
            breaker_open,
            _,
        ] = self.0;
        Counters {
            calls,
            successes,
            rate_limited,
            timeouts,
            server_errors,
            auth_errors,
            quota_exhausted,
            breaker_open,
            refused_locally: 0,
        }
    }

    /// What the moving averages take in.
    pub(super) fn elsewhere(self) -> Elsewhere {
        let [calls, successes, rate_limited, timeouts, .., latency_micros] = self.0;
        Elsewhere {
            calls,
            successes,
            rate_limited,
            timeouts,
            latency_micros,
        }
    }
}

/// Adds each member's `increments` to its counts under `keys` and reads every member's counts.
pub(super) async fn exchange(
    conn: &mut Link,
    keys: &[String],
    increments: &[Tally],
) -> redis::RedisResult<Vec<Tally>> {
    let mut pipe = redis::pipe();
    for (key, increment) in keys.iter().zip(increments) {
        if increment.is_zero() {
            continue;
        }
        for (field, n) in FIELDS.iter().zip(increment.0) {
            if n > 0 {
                pipe.cmd("HINCRBY").arg(key).arg(field).arg(n).ignore();
            }
        }
        pipe.cmd("PEXPIRE").arg(key).arg(MEMORY_MILLIS).ignore();
    }
    for key in keys {
        pipe.cmd("HMGET").arg(key).arg(&FIELDS[..]);
    }
    let counts: Vec<Vec<Option<u64>>> = pipe.query_async(conn).await?;
    Ok(counts.iter().map(|values| Tally::read(values)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_counted_field_by_field_and_a_loss_is_none() {
        let mut earlier = Tally::default();
        earlier.0[0] = 5;
        earlier.0[8] = 1_000;
        let mut later = earlier;
        later.0[0] = 9;
        later.0[1] = 4;
        later.0[8] = 3_000;
        let grown = later.since(earlier).unwrap();
        assert_eq!(grown.0[0], 4);
        assert_eq!(grown.0[1], 4);
        assert_eq!(grown.0[8], 2_000);
        assert_eq!(
            grown.elsewhere(),
            Elsewhere {
                calls: 4,
                successes: 4,
                latency_micros: 2_000,
                ..Elsewhere::default()
            }
        );
        assert_eq!(earlier.since(later), None, "counts that went down");
        assert!(Tally::default().is_zero());
        assert_eq!(Tally::read(&[Some(3), None]).0[..2], [3, 0]);
        assert_eq!(later.counters().calls, 9);
    }
}
