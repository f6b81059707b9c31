//! [`MemoryStore`]: spend kept in the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::ledger::Spend;
use crate::store::{SpendStore, StoreError};

/// A budget's spend per slot start.
type Slots = BTreeMap<i64, Spend>;

/// Spend in memory, for as long as the process runs; see [`SpendStore`].
///
/// # Clone
///
/// Clones share one map: a layer rebuilt from a clone (a config reload) keeps the spend.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    budgets: Arc<Mutex<HashMap<Box<str>, Slots>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SpendStore for MemoryStore {
    fn load(&self, budget: &str) -> Result<Vec<(i64, Spend)>, StoreError> {
        let budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(budgets
            .get(budget)
            .map(|slots| slots.iter().map(|(&s, &v)| (s, v)).collect())
            .unwrap_or_default())
    }

    fn add(&self, budget: &str, slot: i64, spend: Spend) -> Result<(), StoreError> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let slots = match budgets.get_mut(budget) {
            Some(slots) => slots,
            None => budgets.entry(budget.into()).or_default(),
        };
        let entry = slots.entry(slot).or_default();
        *entry = entry.plus(spend);
        Ok(())
    }

    fn prune(&self, budget: &str, before: i64) -> Result<(), StoreError> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slots) = budgets.get_mut(budget) {
            *slots = slots.split_off(&before);
        }
        Ok(())
    }
}
