//! A member's health: counters, moving averages, the 0–100 score, and cooldowns.

use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::{Outcome, OutcomeKind};

/// How long each outcome takes a member out of rotation. Defaults from the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cooldowns {
    /// A 429 rate limit: the provider's `retry-after` (or reset) when it gave one, else this
    /// (default 60 s).
    pub rate_limited: Duration,
    /// A timeout (default 10 s).
    pub timeout: Duration,
    /// An overload (529/503) or other server error (default none: the score drops, and retry
    /// backs off).
    pub server_error: Duration,
    /// A refused credential, 401/403 (default 1 h).
    pub auth_error: Duration,
    /// An open breaker in the member's stack, when it gave no wait (default 30 s).
    pub breaker_open: Duration,
}

impl Default for Cooldowns {
    fn default() -> Self {
        Self {
            rate_limited: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            server_error: Duration::ZERO,
            auth_error: Duration::from_secs(3600),
            breaker_open: Duration::from_secs(30),
        }
    }
}

/// Why a member is out of rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Rate limited by the provider (429).
    RateLimited,
    /// Its calls timed out.
    Timeout,
    /// The provider failed or shed its calls.
    ServerError,
    /// Its credential was refused.
    AuthError,
    /// Its quota is exhausted.
    QuotaExhausted,
    /// Its breaker is open.
    BreakerOpen,
}

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// In rotation.
    Available,
    /// Out of rotation for `left` more.
    CoolingDown {
        /// Why.
        reason: Reason,
        /// Time left.
        left: Duration,
    },
    /// Out of rotation until reset by hand (an exhausted quota with no reset time).
    Parked {
        /// Why.
        reason: Reason,
    },
}

/// What happened to a member, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Calls sent to it.
    pub calls: u64,
    /// Successful ones.
    pub successes: u64,
    /// 429s.
    pub rate_limited: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Overloads and other server errors.
    pub server_errors: u64,
    /// Refused credentials.
    pub auth_errors: u64,
    /// Exhausted quotas.
    pub quota_exhausted: u64,
    /// Refusals by its breaker.
    pub breaker_open: u64,
    /// Calls another layer of its own stack refused before sending them (a local rate limit,
    /// an adaptive limit's shed, a queue timeout): not held against it.
    pub refused_locally: u64,
}

/// Where a failed call's answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The upstream: a response, or a transport error on the way to it.
    Upstream,
    /// The member's breaker, which refused the call: its upstream has been failing.
    Breaker,
    /// Another layer of the member's stack, which refused the call unsent: it says nothing
    /// about the upstream.
    OwnLimit,
}

/// What other processes' calls to a member met since the last look: what
/// [`Health::take_in`] needs.
#[cfg_attr(
    not(feature = "redis"),
    allow(dead_code, reason = "built by the fleet")
)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Elsewhere {
    /// Calls answered by the upstream.
    pub(crate) calls: u64,
    /// Successes among them.
    pub(crate) successes: u64,
    /// 429s among them.
    pub(crate) rate_limited: u64,
    /// Timeouts among them.
    pub(crate) timeouts: u64,
    /// The successes' latency, added up, microseconds.
    pub(crate) latency_micros: u64,
}

/// The weight of one call in the moving averages (about the last 20 calls).
const ALPHA: f64 = 0.05;

#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) counters: Counters,
    success: f64,
    rate_limited: f64,
    timeouts: f64,
    /// Mean latency of successes, seconds.
    pub(crate) latency: Option<f64>,
    /// The latency of every success, added up, microseconds (for the fleet's counts).
    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "read by the fleet"))]
    pub(crate) latency_micros: u64,
    /// The fleet's counters as last read, when the pool shares its health.
    pub(crate) fleet: Option<Counters>,
    pub(crate) in_flight: usize,
    pub(crate) out: Option<(Reason, Option<Instant>)>,
    /// When the cooldown in `out` began (for a fleet: a reset clears those that began before
    /// it).
    pub(crate) since: Option<Instant>,
    /// When the `healthiest` policy last picked it among tied members (a pick number; 0:
    /// never).
    pub(crate) last_pick: u64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            success: 1.0,
            rate_limited: 0.0,
            timeouts: 0.0,
            latency: None,
            latency_micros: 0,
            fleet: None,
            in_flight: 0,
            out: None,
            since: None,
            last_pick: 0,
        }
    }
}

fn ewma(average: &mut f64, sample: f64) {
    *average += ALPHA * (sample - *average);
}

impl Health {
    /// The member's state at `now` (a cooldown that ended puts it back).
    pub(crate) fn state(&mut self, now: Instant) -> MemberState {
        match self.out {
            None => MemberState::Available,
            Some((reason, None)) => MemberState::Parked { reason },
            Some((_, Some(until))) if until <= now => {
                self.out = None;
                MemberState::Available
            }
            Some((reason, Some(until))) => MemberState::CoolingDown {
                reason,
                left: until - now,
            },
        }
    }

    /// When it is back in rotation (`None`: parked, or available now).
    pub(crate) fn back_at(&self) -> Option<Instant> {
        self.out.and_then(|(_, until)| until)
    }

    /// The 0–100 score: the success rate, less half the rate-limit and timeout rates, scaled
    /// by latency against the best member's (`best`), down to half; 0 when out of rotation.
    pub(crate) fn score(&mut self, now: Instant, best: Option<f64>) -> u8 {
        if self.state(now) != MemberState::Available {
            return 0;
        }
        let latency = match (best, self.latency) {
            (Some(best), Some(own)) if own > 0.0 => (best / own).clamp(0.5, 1.0),
            _ => 1.0,
        };
        let score =
            self.success * (1.0 - 0.5 * self.rate_limited) * (1.0 - 0.5 * self.timeouts) * latency;
        (score * 100.0).round().clamp(0.0, 100.0) as u8
    }

    /// Counts one call's outcome and takes the member out of rotation if it says so; returns
    /// the reason when it does.
    ///
    /// A refusal by the member's own stack was never sent: it moves no average and no counter
    /// of the upstream's. An open breaker still takes the member out until its wait (it would
    /// refuse until then); another local refusal does not.
    pub(crate) fn record(
        &mut self,
        outcome: &Outcome,
        source: Source,
        latency: Duration,
        now: Instant,
        cooldowns: &Cooldowns,
    ) -> Option<Reason> {
        let c = &mut self.counters;
        let (reason, cooldown) = match source {
            Source::Upstream => self.record_upstream(outcome, latency, cooldowns)?,
            Source::Breaker => {
                c.breaker_open += 1;
                (
                    Reason::BreakerOpen,
                    Some(outcome.retry_after.unwrap_or(cooldowns.breaker_open)),
                )
            }
            Source::OwnLimit => {
                c.refused_locally += 1;
                return None;
            }
        };
        self.take_out(reason, cooldown, now)
    }

    /// Counts an upstream answer; the cooldown it calls for, if any.
    fn record_upstream(
        &mut self,
        outcome: &Outcome,
        latency: Duration,
        cooldowns: &Cooldowns,
    ) -> Option<(Reason, Option<Duration>)> {
        let c = &mut self.counters;
        c.calls += 1;
        let kind = outcome.kind;
        ewma(
            &mut self.success,
            f64::from(u8::from(kind == OutcomeKind::Success)),
        );
        ewma(
            &mut self.rate_limited,
            f64::from(u8::from(matches!(kind, OutcomeKind::RateLimited(_)))),
        );
        ewma(
            &mut self.timeouts,
            f64::from(u8::from(kind == OutcomeKind::Timeout)),
        );
        Some(match kind {
            OutcomeKind::Success => {
                c.successes += 1;
                let secs = latency.as_secs_f64();
                self.latency = Some(self.latency.map_or(secs, |l| l + ALPHA * (secs - l)));
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency_micros = self.latency_micros.saturating_add(micros);
                return None;
            }
            OutcomeKind::RateLimited(_) => {
                c.rate_limited += 1;
                (
                    Reason::RateLimited,
                    Some(outcome.retry_after.unwrap_or(cooldowns.rate_limited)),
                )
            }
            OutcomeKind::QuotaExhausted => {
                c.quota_exhausted += 1;
                // Until its reset, when the provider said; until reset by hand otherwise.
                (Reason::QuotaExhausted, outcome.retry_after)
            }
            OutcomeKind::Timeout => {
                c.timeouts += 1;
                (Reason::Timeout, Some(cooldowns.timeout))
            }
            OutcomeKind::AuthError => {
                c.auth_errors += 1;
                (Reason::AuthError, Some(cooldowns.auth_error))
            }
            OutcomeKind::Overloaded
            | OutcomeKind::ServerError
            | OutcomeKind::ConnectError
            | OutcomeKind::ConnectionLost => {
                c.server_errors += 1;
                (Reason::ServerError, Some(cooldowns.server_error))
            }
            // The request's own fault: nothing to hold against the member.
            _ => return None,
        })
    }

    /// Takes in what `elsewhere`'s calls met (other processes of a fleet): the moving averages
    /// move as if its calls had been this process's own, in one step each. No counter of this
    /// process moves, and nothing takes the member out of rotation (the fleet's cooldowns do
    /// that).
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "called by the fleet")
    )]
    pub(crate) fn take_in(&mut self, elsewhere: &Elsewhere) {
        // `n` calls of weight ALPHA each, one after the other, weigh 1 - (1 - ALPHA)^n.
        let weight = |n: u64| 1.0 - (1.0 - ALPHA).powi(i32::try_from(n).unwrap_or(i32::MAX));
        if elsewhere.calls > 0 {
            let w = weight(elsewhere.calls);
            let calls = elsewhere.calls as f64;
            self.success += w * (elsewhere.successes as f64 / calls - self.success);
            self.rate_limited += w * (elsewhere.rate_limited as f64 / calls - self.rate_limited);
            self.timeouts += w * (elsewhere.timeouts as f64 / calls - self.timeouts);
        }
        if elsewhere.successes > 0 {
            let mean = elsewhere.latency_micros as f64 / 1e6 / elsewhere.successes as f64;
            let w = weight(elsewhere.successes);
            self.latency = Some(self.latency.map_or(mean, |l| l + w * (mean - l)));
        }
    }

    /// Takes the member out for `cooldown` (`None`: until reset by hand), never shortening a
    /// longer one already running; the reason, unless the cooldown is zero.
    fn take_out(
        &mut self,
        reason: Reason,
        cooldown: Option<Duration>,
        now: Instant,
    ) -> Option<Reason> {
        match cooldown {
            Some(cooldown) if cooldown.is_zero() => None,
            Some(cooldown) => {
                let until = now + cooldown;
                // Never shorten a longer cooldown already running.
                let longer = match self.out {
                    Some((_, None)) => false,
                    Some((_, Some(current))) => until > current,
                    None => true,
                };
                if longer {
                    self.out = Some((reason, Some(until)));
                    self.since = Some(now);
                }
                Some(reason)
            }
            None => {
                self.out = Some((reason, None));
                self.since = Some(now);
                Some(reason)
            }
        }
    }

    /// Back in rotation now.
    pub(crate) fn reset(&mut self) {
        self.out = None;
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::RateLimitDimension;

    use super::*;

    #[test]
    fn each_outcome_cools_down_for_its_time() {
        let now = Instant::now();
        let cooldowns = Cooldowns::default();
        let mut health = Health::default();
        let limited = Outcome::new(OutcomeKind::RateLimited(RateLimitDimension::Requests));
        assert_eq!(
            health.record(&limited, Source::Upstream, Duration::ZERO, now, &cooldowns),
            Some(Reason::RateLimited)
        );
        assert_eq!(
            health.state(now),
            MemberState::CoolingDown {
                reason: Reason::RateLimited,
                left: Duration::from_secs(60)
            }
        );
        // The provider's own wait wins.
        let mut health = Health::default();
        let told = limited
            .clone()
            .with_retry_after(Some(Duration::from_secs(7)));
        health.record(&told, Source::Upstream, Duration::ZERO, now, &cooldowns);
        assert_eq!(health.back_at(), Some(now + Duration::from_secs(7)));
        // A server error costs score, not rotation.
        let mut health = Health::default();
        let failed = Outcome::new(OutcomeKind::ServerError);
        assert_eq!(
            health.record(&failed, Source::Upstream, Duration::ZERO, now, &cooldowns),
            None
        );
        assert_eq!(health.state(now), MemberState::Available);
        assert!(health.score(now, None) < 100);
        // An exhausted quota without a reset is parked until reset by hand.
        let mut health = Health::default();
        health.record(
            &Outcome::new(OutcomeKind::QuotaExhausted),
            Source::Upstream,
            Duration::ZERO,
            now,
            &cooldowns,
        );
        assert_eq!(
            health.state(now + Duration::from_secs(86_400)),
            MemberState::Parked {
                reason: Reason::QuotaExhausted
            }
        );
        health.reset();
        assert_eq!(health.state(now), MemberState::Available);
    }

    #[test]
    fn a_refusal_by_its_own_stack_is_not_held_against_a_member() {
        let now = Instant::now();
        let cooldowns = Cooldowns::default();
        let mut health = Health::default();
        // A local limit's refusal classifies as a rate limit, a shed as overloaded, a queue
        // given up as a timeout: none of them reached the upstream.
        let refusals = [
            Outcome::new(OutcomeKind::RateLimited(RateLimitDimension::Tokens))
                .with_retry_after(Some(Duration::from_secs(5))),
            Outcome::new(OutcomeKind::Overloaded),
            Outcome::new(OutcomeKind::Timeout),
        ];
        for _ in 0..20 {
            for refusal in &refusals {
                let reason =
                    health.record(refusal, Source::OwnLimit, Duration::ZERO, now, &cooldowns);
                assert_eq!(reason, None, "{refusal}");
            }
        }
        assert_eq!(health.state(now), MemberState::Available);
        assert_eq!(health.score(now, None), 100);
        assert_eq!(health.counters.calls, 0, "nothing was sent");
        assert_eq!(health.counters.refused_locally, 60);
        assert_eq!(
            (
                health.counters.rate_limited,
                health.counters.timeouts,
                health.counters.server_errors
            ),
            (0, 0, 0)
        );

        // Its breaker's refusal takes it out until the breaker's wait, without moving its score.
        let open =
            Outcome::new(OutcomeKind::Overloaded).with_retry_after(Some(Duration::from_secs(4)));
        assert_eq!(
            health.record(&open, Source::Breaker, Duration::ZERO, now, &cooldowns),
            Some(Reason::BreakerOpen)
        );
        assert_eq!(health.back_at(), Some(now + Duration::from_secs(4)));
        assert_eq!(health.score(now + Duration::from_secs(4), None), 100);
        assert_eq!(health.counters.breaker_open, 1);
    }

    #[test]
    fn calls_met_elsewhere_move_the_averages_as_if_made_here() {
        let now = Instant::now();
        let cooldowns = Cooldowns::default();
        let failed = Outcome::new(OutcomeKind::ServerError);
        let mut here = Health::default();
        for _ in 0..10 {
            here.record(&failed, Source::Upstream, Duration::ZERO, now, &cooldowns);
        }
        let mut there = Health::default();
        there.take_in(&Elsewhere {
            calls: 10,
            ..Elsewhere::default()
        });
        assert_eq!(there.score(now, None), here.score(now, None));
        assert!(there.score(now, None) < 65, "{}", there.score(now, None));
        assert_eq!(
            there.counters,
            Counters::default(),
            "no counter of its own moved"
        );
        assert_eq!(there.state(now), MemberState::Available);

        // Successes bring it back, and bring their latency.
        there.take_in(&Elsewhere {
            calls: 200,
            successes: 200,
            latency_micros: 200 * 400_000,
            ..Elsewhere::default()
        });
        assert_eq!(there.score(now, None), 100);
        assert!((there.latency.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(there.score(now, Some(0.1)), 50);
    }

    #[test]
    fn the_score_follows_success_and_latency() {
        let now = Instant::now();
        let cooldowns = Cooldowns::default();
        let mut fast = Health::default();
        let mut slow = Health::default();
        let ok = Outcome::new(OutcomeKind::Success);
        for _ in 0..50 {
            fast.record(
                &ok,
                Source::Upstream,
                Duration::from_millis(100),
                now,
                &cooldowns,
            );
            slow.record(
                &ok,
                Source::Upstream,
                Duration::from_millis(400),
                now,
                &cooldowns,
            );
        }
        assert_eq!(fast.score(now, Some(0.1)), 100);
        assert_eq!(
            slow.score(now, Some(0.1)),
            50,
            "latency counts down to half"
        );
    }
}
