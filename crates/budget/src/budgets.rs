//! The budgets a layer enforces, and the reservation of a call in every one that applies.
//!
//! A call's worst case is reserved in each budget whose scope matches it, one after the
//! other; if one cannot hold it, those already taken are given back and the call is refused
//! with [`BudgetExceeded`]. A budget's books are behind a lock of their own, held for a few
//! additions: the check and the reservation are one step, so no two calls can both take the
//! last dollar.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tollgate_cache::Tenant;
use tollgate_core::{BoxError, EndpointKind, LlmRequest};

use crate::cost::{CallCost, WorstCase};
use crate::error::BudgetExceeded;
use crate::ledger::{Ledger, Limits, Spend};
use crate::metrics;
use crate::price::{Price, PriceTable};
use crate::reservation::Reservation;
use crate::store::SpendStore;
use crate::window::{WallClock, Window, from_unix_secs, unix_secs};

/// Which calls a budget counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BudgetScope {
    /// Every call (`scope = "overall"`, the default).
    #[default]
    Overall,
    /// The calls made for one tenant: a [`Tenant`] request extension with this name
    /// (`scope = { tenant = "acme" }`).
    Tenant(String),
    /// The calls to one model, as the request names it — in a gateway, a model group
    /// (`scope = { model = "gpt-4o" }`).
    Model(String),
}

impl BudgetScope {
    fn applies(&self, request: &LlmRequest, tenant: Option<&Tenant>) -> bool {
        match self {
            Self::Overall => true,
            Self::Tenant(name) => tenant.is_some_and(|t| t.as_str() == name),
            Self::Model(name) => request.model.as_deref() == Some(name.as_str()),
        }
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overall => f.write_str("overall"),
            Self::Tenant(name) => write!(f, "tenant {name}"),
            Self::Model(name) => write!(f, "model {name}"),
        }
    }
}

/// One budget as it stands: what its window has spent and what calls in flight hold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetSnapshot {
    /// Its name.
    pub name: String,
    /// Which calls it counts.
    pub scope: BudgetScope,
    /// Its window.
    pub window: Window,
    /// Its limits.
    pub limits: Limits,
    /// Spent in the window now.
    pub spent: Spend,
    /// Held by calls in flight.
    pub reserved: Spend,
    /// When spend next stops counting (see [`BudgetExceeded::resets_at`]).
    pub resets_at: SystemTime,
}

pub(crate) struct BudgetState {
    pub(crate) name: String,
    pub(crate) scope: BudgetScope,
    pub(crate) limits: Limits,
    pub(crate) window: Window,
    /// Parts per million of a limit at which a warning is given.
    pub(crate) soft_threshold_ppm: Option<u32>,
    pub(crate) ledger: Mutex<Ledger>,
}

impl BudgetState {
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report_remaining(&self, ledger: &Ledger) {
        self.report_taken(ledger.spent().plus(ledger.reserved()));
    }

    /// Reports what is left beside `taken` (spent and reserved).
    pub(crate) fn report_taken(&self, taken: Spend) {
        if let Some(limit) = self.limits.usd {
            metrics::remaining(&self.name, limit.saturating_sub(taken.usd));
        }
    }

    /// Gives the soft-threshold warning once per crossing.
    fn check_soft_threshold(&self, ledger: &mut Ledger) {
        let spent = ledger.spent();
        self.soft_threshold(spent, &mut ledger.warned);
    }

    /// Gives the soft-threshold warning once per crossing, given `spent`; `warned` says whether
    /// it was given since the spend was last below it.
    pub(crate) fn soft_threshold(&self, spent: Spend, warned: &mut bool) {
        let Some(ppm) = self.soft_threshold_ppm else {
            return;
        };
        let over = self
            .limits
            .usd
            .is_some_and(|l| spent.usd >= l.scaled_ppm(ppm))
            || self.limits.tokens.is_some_and(|l| {
                u128::from(spent.tokens) * 1_000_000 >= u128::from(l) * u128::from(ppm)
            });
        if over && !*warned {
            *warned = true;
            tracing::warn!(
                budget = %self.name,
                scope = %self.scope,
                spent = %spent.usd,
                spent_tokens = spent.tokens,
                limit = ?self.limits,
                "budget past its soft threshold"
            );
            metrics::soft_threshold(&self.name);
        } else if !over {
            *warned = false;
        }
    }
}

/// Everything a layer and its services share.
pub(crate) struct Budgets {
    pub(crate) budgets: Vec<BudgetState>,
    pub(crate) prices: PriceTable,
    pub(crate) worst: WorstCase,
    pub(crate) store: Arc<dyn SpendStore>,
    pub(crate) clock: Arc<dyn WallClock>,
    /// The tenants that name a budget: the only ones labelled by name in metrics.
    pub(crate) tenants: HashSet<String>,
}

impl fmt::Debug for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgets")
            .field(
                "budgets",
                &self.budgets.iter().map(|b| &b.name).collect::<Vec<_>>(),
            )
            .field("worst", &self.worst)
            .field("store", &self.store)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Budgets {
    pub(crate) fn now(&self) -> i64 {
        unix_secs(self.clock.now())
    }

    /// Reserves the worst case of a call in every budget that applies, or refuses it.
    /// A request without an [`LlmRequest`] is not counted.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        request: Option<&LlmRequest>,
        tenant: Option<&Tenant>,
    ) -> Result<Option<Reservation>, BoxError> {
        let Some(request) = request else {
            return Ok(None);
        };
        let (price, worst) = self.price_and_worst(request)?;
        let now = self.now();
        let mut applied = Vec::new();
        for (index, budget) in self.budgets.iter().enumerate() {
            if !budget.scope.applies(request, tenant) {
                continue;
            }
            let mut ledger = budget.ledger();
            match ledger.try_reserve(budget.limits, budget.window, worst, now) {
                Ok(()) => {
                    budget.report_remaining(&ledger);
                    applied.push(index);
                }
                Err(short) => {
                    drop(ledger);
                    self.release(&applied, worst);
                    metrics::refused(&budget.name);
                    tracing::debug!(budget = %budget.name, "call refused: over budget");
                    return Err(Box::new(BudgetExceeded {
                        budget: budget.name.clone(),
                        scope: budget.scope.clone(),
                        window: budget.window,
                        limit: short.limit,
                        spent: short.spent,
                        reserved: short.reserved,
                        requested: short.requested,
                        resets_at: from_unix_secs(short.resets_at),
                    }));
                }
            }
        }
        Ok(Some(Reservation::new(
            self.clone(),
            applied,
            worst,
            CallCost::new(worst, price),
            request.provider,
            request.model.clone(),
            self.tenant_label(tenant),
        )))
    }

    /// The price of a call and its worst case.
    #[inline]
    pub(crate) fn price_and_worst(&self, request: &LlmRequest) -> Result<(Price, Spend), BoxError> {
        let billed =
            request.endpoint.is_generation() || request.endpoint == EndpointKind::Embeddings;
        let price = if billed {
            self.prices
                .price_of(request.provider, request.model.as_deref().unwrap_or(""))?
        } else {
            Price::default()
        };
        let worst = self.worst.of(request, &price);
        Ok((price, worst))
    }

    /// The tenant as metrics name it: by name if a budget names it, else `other` or `none`.
    pub(crate) fn tenant_label(&self, tenant: Option<&Tenant>) -> String {
        match tenant {
            Some(t) if self.tenants.contains(t.as_str()) => t.as_str().to_owned(),
            Some(_) => "other".to_owned(),
            None => "none".to_owned(),
        }
    }

    /// The budgets (by index) whose scope `request` matches.
    #[cfg(feature = "redis")]
    pub(crate) fn applying(&self, request: &LlmRequest, tenant: Option<&Tenant>) -> Vec<usize> {
        (0..self.budgets.len())
            .filter(|&i| self.budgets[i].scope.applies(request, tenant))
            .collect()
    }

    /// Gives `held` back to the budgets at `applied`.
    pub(crate) fn release(&self, applied: &[usize], held: Spend) {
        for &index in applied {
            let budget = &self.budgets[index];
            let mut ledger = budget.ledger();
            ledger.release(held);
            budget.report_remaining(&ledger);
        }
    }

    /// Replaces `held` with `cost` in the budgets at `applied`, and writes it to the store.
    pub(crate) fn charge(&self, applied: &[usize], held: Spend, cost: Spend) {
        let now = self.now();
        for &index in applied {
            let budget = &self.budgets[index];
            let (slot, new_slot) = {
                let mut ledger = budget.ledger();
                let slot = budget.window.slot_at(now);
                ledger.prune(budget.window, now);
                let new_slot = !ledger.has_slot(slot);
                ledger.settle(held, cost, budget.window, now);
                budget.check_soft_threshold(&mut ledger);
                budget.report_remaining(&ledger);
                (slot, new_slot)
            };
            if cost != Spend::ZERO
                && let Err(error) = self.store.add(&budget.name, slot, cost)
            {
                tracing::error!(budget = %budget.name, %error, "spend not persisted");
            }
            if new_slot
                && let Err(error) = self
                    .store
                    .prune(&budget.name, budget.window.counted_from(now))
            {
                tracing::warn!(budget = %budget.name, %error, "past spend not pruned");
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<BudgetSnapshot> {
        let now = self.now();
        self.budgets
            .iter()
            .map(|budget| {
                let mut ledger = budget.ledger();
                ledger.prune(budget.window, now);
                BudgetSnapshot {
                    name: budget.name.clone(),
                    scope: budget.scope.clone(),
                    window: budget.window,
                    limits: budget.limits,
                    spent: ledger.spent(),
                    reserved: ledger.reserved(),
                    resets_at: from_unix_secs(ledger.resets_at(budget.window, now)),
                }
            })
            .collect()
    }
}
