//! A call's reservation, as an RAII guard, and the rule that turns how the call ended into
//! what it is charged.
//!
//! | How the call ended | Charged |
//! |---|---|
//! | refused by a budget | nothing (nothing was reserved) |
//! | failed before any response, and never left (a local refusal below — rate limit, breaker, queue —, or no connection) | nothing |
//! | failed before any response after it may have been sent (a timeout, a reset) | its worst case: the provider may be generating |
//! | answered with an error status (4xx, 5xx) | nothing: providers do not bill refused calls |
//! | answered 2xx, body read to the end with usage | the usage at the model's price |
//! | answered 2xx, body ended without usage (an OpenAI stream without `stream_options.include_usage`) | its worst case |
//! | answered 2xx, body broke or was dropped | its worst case, or the usage seen so far if that costs more |
//! | answered 2xx, no [`EndOfStream`] in the response (no `ClassifyLayer` below) | its worst case, at once |
//! | response future dropped after the call was sent | its worst case |
//! | response future dropped before the call was sent | nothing |
//!
//! Charging the worst case when in doubt keeps budgets holding: the provider's bill can only
//! be lower than what was counted, never higher (as long as a call never costs more than
//! its worst case; see [`WorstCase`](crate::WorstCase)).

use std::sync::Arc;

use http::Response;
use tollgate_core::body::{EndOfStream, EndReason, StreamEnd};
use tollgate_core::classify::{classify_error, is_local_refusal};
use tollgate_core::{Outcome, OutcomeKind, Provider};

use crate::budgets::Budgets;
use crate::cost::{CallCost, ChargeBasis, Charged};
use crate::error::BudgetExceeded;
use crate::ledger::Spend;
use crate::metrics;

/// The worst case a call holds in the budgets that apply to it, until it is settled.
/// Dropped unsettled, it charges the worst case if the call was sent and releases it if not.
pub(crate) struct Reservation {
    budgets: Arc<Budgets>,
    applied: Vec<usize>,
    worst: Spend,
    cost: CallCost,
    provider: Provider,
    model: Option<Arc<str>>,
    tenant_label: String,
    sent: bool,
    settled: bool,
    /// Where the reservation is held when the books are in Redis.
    #[cfg(feature = "redis")]
    hold: Option<crate::redis::Hold>,
}

impl Reservation {
    pub(crate) fn new(
        budgets: Arc<Budgets>,
        applied: Vec<usize>,
        worst: Spend,
        cost: CallCost,
        provider: Provider,
        model: Option<Arc<str>>,
        tenant_label: String,
    ) -> Self {
        Self {
            budgets,
            applied,
            worst,
            cost,
            provider,
            model,
            tenant_label,
            sent: false,
            settled: false,
            #[cfg(feature = "redis")]
            hold: None,
        }
    }

    /// The reservation is held in the fleet's books, not in `budgets`' ledgers.
    #[cfg(feature = "redis")]
    pub(crate) fn held_in(mut self, hold: crate::redis::Hold) -> Self {
        self.hold = Some(hold);
        self
    }

    /// Gives the reservation back (`cost` none) or replaces it with `cost`, in its books.
    fn book(&mut self, cost: Option<Spend>) {
        #[cfg(feature = "redis")]
        if let Some(hold) = self.hold.take() {
            return hold.settle(&self.applied, self.worst, cost);
        }
        match cost {
            None => self.budgets.release(&self.applied, self.worst),
            Some(cost) => self.budgets.charge(&self.applied, self.worst, cost),
        }
    }

    /// The call is on its way: the provider may bill it from now on.
    pub(crate) fn sent(&mut self) {
        self.sent = true;
    }

    fn charge(&mut self, spend: Spend, usage: Option<tollgate_core::Usage>, basis: ChargeBasis) {
        self.settled = true;
        if basis == ChargeBasis::Released {
            self.book(None);
        } else {
            if spend.usd > self.worst.usd || spend.tokens > self.worst.tokens {
                tracing::warn!(
                    model = self.model.as_deref(),
                    reserved = %self.worst.usd,
                    charged = %spend.usd,
                    "a call cost more than its worst case (input estimate too low?)"
                );
            }
            self.book(Some(spend));
            metrics::spend(
                &self.tenant_label,
                self.provider,
                self.model.as_deref(),
                spend.usd,
            );
        }
        self.cost.set(Charged {
            spend,
            usage,
            basis,
        });
    }

    fn release(mut self) {
        self.charge(Spend::ZERO, None, ChargeBasis::Released);
    }

    fn charge_worst_case(mut self) {
        let worst = self.worst;
        self.charge(worst, None, ChargeBasis::WorstCase);
    }

    /// Settles with the response: at once for an error status or a body nobody observes,
    /// else when the body ends. Puts the [`CallCost`] in the response extensions.
    pub(crate) fn settle_response<RB>(self, response: &mut Response<RB>) {
        response.extensions_mut().insert(self.cost.clone());
        let success = response
            .extensions()
            .get::<Outcome>()
            .map_or(response.status().is_success(), |o| {
                o.kind == OutcomeKind::Success
            });
        if !success {
            return self.release();
        }
        match response.extensions().get::<EndOfStream>() {
            Some(end) => end.on_end(move |end| self.ended(end)),
            None => self.charge_worst_case(),
        }
    }

    fn ended(mut self, end: &StreamEnd) {
        match (end.usage, end.reason) {
            (Some(usage), EndReason::Complete) => {
                let spend = self.usage_cost(&usage);
                self.charge(spend, Some(usage), ChargeBasis::Usage);
            }
            (Some(usage), _) => {
                let seen = self.usage_cost(&usage);
                let basis = if seen.usd > self.worst.usd {
                    ChargeBasis::Usage
                } else {
                    ChargeBasis::WorstCase
                };
                let spend = seen.max(self.worst);
                self.charge(spend, Some(usage), basis);
            }
            (None, _) => self.charge_worst_case(),
        }
    }

    fn usage_cost(&self, usage: &tollgate_core::Usage) -> Spend {
        Spend {
            usd: self.cost.price().cost(usage),
            tokens: usage.total_tokens(),
        }
    }

    /// Settles a call that failed without a response.
    pub(crate) fn settle_error(self, error: &(dyn std::error::Error + Send + Sync + 'static)) {
        let never_left = is_local_refusal(error)
            || error.is::<BudgetExceeded>()
            || classify_error(error).kind == OutcomeKind::ConnectError;
        if never_left || !self.sent {
            self.release();
        } else {
            self.charge_worst_case();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            if self.sent {
                let worst = self.worst;
                self.charge(worst, None, ChargeBasis::WorstCase);
            } else {
                self.charge(Spend::ZERO, None, ChargeBasis::Released);
            }
        }
    }
}
