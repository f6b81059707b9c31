use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tollgate_core::TokioClock;
use tollgate_core::config::ConfigError;
use tower::Layer;

use crate::budgets::{BudgetScope, BudgetSnapshot, BudgetState, Budgets};
use crate::config::BudgetConfig;
use crate::ledger::Ledger;
use crate::memory::MemoryStore;
use crate::price::PriceTable;
use crate::service::Budget;
use crate::store::SpendStore;
use crate::window::WallClock;

/// Reserves each call's worst case in the budgets that apply and charges what it actually
/// cost; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share one set of budgets (the same books, the same store): every service made by
/// any clone counts against the same limits.
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    budgets: Arc<Budgets>,
}

impl BudgetLayer {
    /// The layer `config` describes, with spend kept in memory and the system's calendar.
    ///
    /// # Errors
    ///
    /// A setting that is not usable ([`BudgetConfig::validate`]).
    pub fn configured(config: &BudgetConfig) -> Result<Self, ConfigError> {
        Self::configured_with(config, MemoryStore::new(), TokioClock)
    }

    /// The layer `config` describes, with spend read from and written to `store`, and the
    /// calendar read from `clock`. The spend already in the store counts at once.
    ///
    /// # Errors
    ///
    /// A setting that is not usable, or a store that cannot be read (field `store`).
    pub fn configured_with(
        config: &BudgetConfig,
        store: impl SpendStore,
        clock: impl WallClock,
    ) -> Result<Self, ConfigError> {
        let (checked, prices, worst) = config.checked()?;
        let mut budgets = Vec::with_capacity(checked.len());
        let mut tenants = HashSet::new();
        for budget in checked {
            let slots = store
                .load(&budget.name)
                .map_err(|e| ConfigError::invalid("store", e.to_string()))?;
            if let BudgetScope::Tenant(name) = &budget.scope {
                tenants.insert(name.clone());
            }
            budgets.push(BudgetState {
                name: budget.name,
                scope: budget.scope,
                limits: budget.limits,
                window: budget.window,
                soft_threshold_ppm: budget.soft_threshold_ppm,
                ledger: Mutex::new(Ledger::with_slots(slots)),
            });
        }
        Ok(Self {
            budgets: Arc::new(Budgets {
                budgets,
                prices,
                worst,
                store: Arc::new(store),
                clock: Arc::new(clock),
                tenants,
            }),
        })
    }

    /// Every budget as it stands: spent, reserved, when it resets.
    pub fn snapshot(&self) -> Vec<BudgetSnapshot> {
        self.budgets.snapshot()
    }

    /// The prices calls are charged at.
    pub fn prices(&self) -> &PriceTable {
        &self.budgets.prices
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::new(inner, self.budgets.clone())
    }
}
