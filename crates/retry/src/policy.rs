//! Whether an attempt is sent again, and after how long: the whole decision, in one place.
//!
//! After each attempt that did not succeed, [`Retries::decide`] asks, in this order:
//!
//! 1. **Can another attempt succeed?** The [`RetryPolicy`] judges the outcome alone
//!    ([`DefaultRetryPolicy`]: [`Outcome::is_retryable`]).
//! 2. **May the request be sent again?** [`Repeat`] keeps an upload, a batch creation or an
//!    unknown `POST` from being sent twice after a failure that may have been processed, and a
//!    billed call from being resent after a lost connection unless the layer opts in — a resent
//!    call may be billed twice (see the [crate docs](crate#why-a-retry-can-cost-twice)).
//! 3. **Are attempts left?** At most `max_attempts`, the first included.
//! 4. **How long to wait?** What the provider asked (`Retry-After`, capped by
//!    `max_retry_after`), or else the [`Backoff`](crate::Backoff)'s next delay.
//! 5. **Is there time?** A wait that would reach the request's deadline is not started.
//! 6. **Does the budget allow it?** The budget guards the upstream from retry storms, so it is
//!    not charged for a refusal by a layer below (it never reached the upstream) nor for a
//!    429 (the upstream pacing its callers: the rate limiter below learns from it and holds
//!    the retry to the pace).
//!
//! The response future only asks and sleeps.

use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tollgate_core::rng::Rng;
use tollgate_core::{Delivery, LlmRequest, Outcome, OutcomeKind, Repeat};

use crate::layer::Shared;
use crate::metrics::{self, GaveUp};

/// Decides whether an attempt's outcome is worth retrying.
pub trait RetryPolicy: Clone + Send + Sync + 'static {
    /// Whether another attempt can succeed.
    fn should_retry(&self, outcome: &Outcome) -> bool;
}

/// The default: rate limited, overloaded, server error, timeout, connect error and connection
/// lost are retried (and anything the provider marks `x-should-retry: true`); never an
/// exhausted quota, an oversize request, an auth or client error, or a prompt over the context
/// length — retrying those only costs money. This is [`Outcome::is_retryable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultRetryPolicy;

impl RetryPolicy for DefaultRetryPolicy {
    fn should_retry(&self, outcome: &Outcome) -> bool {
        outcome.is_retryable()
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Give the caller this attempt's answer, for this reason.
    Answer(&'static str),
    /// Wait this long, then send the request again.
    Retry(Duration),
}

/// One request's retries so far: what the next decision depends on.
#[derive(Debug)]
pub(crate) struct Retries {
    /// Attempts made, the first included.
    pub(crate) attempts: u32,
    /// Time spent waiting between attempts.
    pub(crate) waited: Duration,
    /// The last wait (decorrelated jitter grows from it).
    previous: Duration,
    rng: Rng,
    deadline: Option<Instant>,
}

impl Retries {
    /// A request whose first attempt is under way.
    pub(crate) fn new(rng: Rng, deadline: Option<Instant>) -> Self {
        Self {
            attempts: 1,
            waited: Duration::ZERO,
            previous: Duration::ZERO,
            rng,
            deadline,
        }
    }

    /// Whether `request` is sent again after an attempt with this `outcome`, and after how
    /// long; `local` when a layer below refused the attempt before it reached the upstream.
    /// A retry is counted here (and in the budget): the caller only waits and sends.
    pub(crate) fn decide<P: RetryPolicy, B>(
        &mut self,
        shared: &Shared<P>,
        request: &Request<B>,
        outcome: &Outcome,
        local: bool,
        now: Instant,
    ) -> Decision {
        if outcome.is_success() {
            return Decision::Answer("success");
        }
        if !shared.policy.should_retry(outcome) {
            return Decision::Answer("not retryable");
        }
        let config = &shared.config;
        let llm = request.extensions().get::<LlmRequest>();
        let delivery = Delivery::of(outcome, local);
        if !Repeat::of_request(request).allows(delivery, config.resend_unanswered) {
            metrics::gave_up(llm, GaveUp::UnsafeToResend);
            return Decision::Answer("it may have been processed: unsafe to resend");
        }
        if self.attempts >= config.max_attempts {
            metrics::gave_up(llm, GaveUp::AttemptsExhausted);
            return Decision::Answer("attempts exhausted");
        }
        let wait = match outcome.retry_after {
            Some(asked) => asked.min(config.max_retry_after),
            None => config
                .backoff
                .delay(self.attempts, self.previous, &mut self.rng),
        };
        if self.deadline.is_some_and(|deadline| now + wait >= deadline) {
            metrics::gave_up(llm, GaveUp::Deadline);
            return Decision::Answer("the wait would pass the deadline");
        }
        let pacing = matches!(outcome.kind, OutcomeKind::RateLimited(_));
        if !local && !pacing && !shared.budget.withdraw(now) {
            metrics::gave_up(llm, GaveUp::BudgetExhausted);
            return Decision::Answer("retry budget exhausted");
        }
        tracing::debug!(attempt = self.attempts, ?wait, outcome = %outcome, "retrying");
        metrics::retrying(llm, outcome.kind.as_str(), wait);
        self.attempts += 1;
        self.waited += wait;
        self.previous = wait;
        Decision::Retry(wait)
    }
}
