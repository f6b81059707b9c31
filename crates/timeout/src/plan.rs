//! The deadlines of one attempt, fixed when it is called.

use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::{Deadline, LlmRequest};

use crate::config::{TimeoutConfig, Timeouts};
use crate::error::Limit;

/// When each limit of one attempt runs out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// When the attempt was called.
    pub(crate) start: Instant,
    /// The first byte is due by then (streamed requests only).
    first_byte: Option<Instant>,
    idle: Option<Duration>,
    /// The sooner of the total time and the request's deadline.
    end: Option<(Instant, Limit)>,
}

impl Plan {
    pub(crate) fn new(
        config: &TimeoutConfig,
        overrides: Option<&Timeouts>,
        llm: Option<&LlmRequest>,
        deadline: Option<Deadline>,
        start: Instant,
    ) -> Self {
        let config = match overrides {
            Some(overrides) => config.with(overrides),
            None => *config,
        };
        let output_tokens = llm.filter(|llm| llm.endpoint.is_generation()).map(|llm| {
            llm.max_output_tokens
                .unwrap_or(config.default_output_tokens)
        });
        let total = config
            .total_for(output_tokens)
            .and_then(|total| start.checked_add(total))
            .map(|at| (at, Limit::Total));
        let deadline = deadline.map(|deadline| (deadline.0, Limit::Deadline));
        let streams = llm.is_some_and(|llm| llm.stream);
        Self {
            start,
            first_byte: config
                .first_byte
                .filter(|_| streams)
                .and_then(|limit| start.checked_add(limit)),
            idle: config.idle,
            end: sooner(total, deadline),
        }
    }

    /// When the response headers are due, and which limit says so.
    pub(crate) fn headers(&self) -> Option<(Instant, Limit)> {
        sooner(self.first_byte.map(|at| (at, Limit::FirstByte)), self.end)
    }

    /// When the next frame of the body is due, asked for at `now`; `first`: no data yet.
    pub(crate) fn next_frame(&self, now: Instant, first: bool) -> Option<(Instant, Limit)> {
        let idle = self.idle.and_then(|idle| now.checked_add(idle));
        let phase = match (self.first_byte.filter(|_| first), idle) {
            // Still the time to first token, but never less than the idle limit past now.
            (Some(first_byte), idle) => {
                Some((first_byte.max(idle.unwrap_or(first_byte)), Limit::FirstByte))
            }
            (None, idle) => idle.map(|at| (at, Limit::Idle)),
        };
        sooner(phase, self.end)
    }
}

/// The earlier of two deadlines (the first on a tie).
fn sooner(a: Option<(Instant, Limit)>, b: Option<(Instant, Limit)>) -> Option<(Instant, Limit)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::{EndpointKind, Provider};

    use super::*;

    fn chat(stream: bool, max_tokens: Option<u32>) -> LlmRequest {
        let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        llm.stream = stream;
        llm.max_output_tokens = max_tokens;
        llm
    }

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn headers_of_a_stream_are_due_at_the_first_byte_limit() {
        let now = Instant::now();
        let config = TimeoutConfig::default();
        let plan = Plan::new(&config, None, Some(&chat(true, Some(100))), None, now);
        assert_eq!(plan.headers(), Some((now + secs(60), Limit::FirstByte)));
        // Not streamed: the headers come with the whole answer, bounded by the total.
        let plan = Plan::new(&config, None, Some(&chat(false, Some(100))), None, now);
        assert_eq!(plan.headers(), Some((now + secs(65), Limit::Total)));
        // No max_tokens: the default output allowance.
        let plan = Plan::new(&config, None, Some(&chat(false, None)), None, now);
        assert_eq!(
            plan.headers(),
            Some((now + Duration::from_millis(469_600), Limit::Total))
        );
        // Embeddings generate nothing: the base total.
        let embed = LlmRequest::new(Provider::OpenAi, EndpointKind::Embeddings);
        let plan = Plan::new(&config, None, Some(&embed), None, now);
        assert_eq!(plan.headers(), Some((now + secs(60), Limit::Total)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sooner_deadline_wins_and_a_later_one_does_not() {
        let now = Instant::now();
        let config = TimeoutConfig::default();
        let llm = chat(true, Some(100));
        let soon = Deadline(now + secs(10));
        let plan = Plan::new(&config, None, Some(&llm), Some(soon), now);
        assert_eq!(plan.headers(), Some((now + secs(10), Limit::Deadline)));
        assert_eq!(
            plan.next_frame(now + secs(1), false),
            Some((now + secs(10), Limit::Deadline))
        );
        let late = Deadline(now + secs(3_600));
        let plan = Plan::new(&config, None, Some(&llm), Some(late), now);
        assert_eq!(plan.headers(), Some((now + secs(60), Limit::FirstByte)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_frame_gets_at_least_the_idle_limit() {
        let now = Instant::now();
        let config = TimeoutConfig::default();
        let plan = Plan::new(&config, None, Some(&chat(true, Some(10_000))), None, now);
        // Headers at 5 s: the first token is still due at 60 s.
        assert_eq!(
            plan.next_frame(now + secs(5), true),
            Some((now + secs(60), Limit::FirstByte))
        );
        // Headers at 59 s: 30 s more for the first token.
        assert_eq!(
            plan.next_frame(now + secs(59), true),
            Some((now + secs(89), Limit::FirstByte))
        );
        // After the first data, the idle limit.
        assert_eq!(
            plan.next_frame(now + secs(70), false),
            Some((now + secs(100), Limit::Idle))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limits_no_deadlines() {
        let now = Instant::now();
        let plan = Plan::new(
            &TimeoutConfig::unlimited(),
            None,
            Some(&chat(true, Some(1))),
            None,
            now,
        );
        assert_eq!(plan.headers(), None);
        assert_eq!(plan.next_frame(now, true), None);
        let lifted = Timeouts::new().with_total(Duration::MAX);
        let plan = Plan::new(&TimeoutConfig::default(), Some(&lifted), None, None, now);
        assert_eq!(plan.headers(), None, "Duration::MAX lifts the total");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use tollgate_core::{EndpointKind, Provider};

    use super::*;

    fn limit() -> impl Strategy<Value = Option<Duration>> {
        proptest::option::of((1u64..10_000_000).prop_map(Duration::from_millis))
    }

    proptest! {
        /// Whatever the limits, a deadline is never later than any limit that applies, and the
        /// limit it names is one that applies at that instant.
        #[test]
        fn deadlines_are_the_soonest_limit(
            first_byte in limit(),
            idle in limit(),
            total in limit(),
            per_token_ms in proptest::option::of(0u64..1_000),
            max_tokens in proptest::option::of(0u32..200_000),
            stream: bool,
            deadline_ms in proptest::option::of(0u64..100_000_000),
            asked_ms in 0u64..100_000_000,
            first: bool,
        ) {
            let start = Instant::now();
            let config = TimeoutConfig {
                first_byte,
                idle,
                total,
                per_output_token: per_token_ms.map(Duration::from_millis),
                default_output_tokens: 4_096,
            };
            let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
            llm.stream = stream;
            llm.max_output_tokens = max_tokens;
            let deadline = deadline_ms.map(|ms| Deadline(start + Duration::from_millis(ms)));
            let plan = Plan::new(&config, None, Some(&llm), deadline, start);
            let end_total = config
                .total_for(Some(max_tokens.unwrap_or(4_096)))
                .map(|total| start + total);

            let headers = plan.headers();
            let applies = |at: Instant, limit: Limit| match limit {
                Limit::FirstByte => stream && first_byte.is_some_and(|fb| at >= start + fb),
                Limit::Idle => false,
                Limit::Total => end_total == Some(at),
                Limit::Deadline => deadline == Some(Deadline(at)),
            };
            match headers {
                None => prop_assert!((first_byte.is_none() || !stream) && total.is_none() && deadline.is_none()),
                Some((at, limit)) => {
                    prop_assert!(applies(at, limit));
                    prop_assert!(deadline.is_none_or(|d| at <= d.0));
                    prop_assert!(end_total.is_none_or(|end| at <= end));
                    if stream && let Some(fb) = first_byte {
                        prop_assert!(at <= start + fb);
                    }
                }
            }

            let now = start + Duration::from_millis(asked_ms);
            if let Some((at, limit)) = plan.next_frame(now, first) {
                prop_assert!(deadline.is_none_or(|d| at <= d.0));
                prop_assert!(end_total.is_none_or(|end| at <= end));
                if !(first && stream && first_byte.is_some()) {
                    prop_assert!(idle.is_none_or(|idle| at <= now + idle));
                } else if let Some(idle) = idle {
                    // Waiting for the first data: never sooner than the idle limit, unless the
                    // end comes first.
                    prop_assert!(at >= now + idle || matches!(limit, Limit::Total | Limit::Deadline));
                }
            } else {
                prop_assert!(idle.is_none() && total.is_none() && deadline.is_none());
            }
        }
    }
}
