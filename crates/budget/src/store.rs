//! Where spend is kept between restarts: the [`SpendStore`] seam.
//!
//! A store holds, per budget, the spend of each slot of its window (see
//! [`window`](crate::window)), written each time a call is settled. It holds *spend only*:
//! the reservations of calls in flight live in memory and are lost with the process. That is
//! safe because a reservation is never the only record of money spent — every settled call
//! was written before its reservation was dropped — so a restart forgets only calls that were
//! still running, whose cost the provider will bill but this process can no longer learn (at
//! most one worst case per call in flight at the moment of the crash).
//!
//! Two stores ship: [`MemoryStore`](crate::MemoryStore) (the default: spend lasts as long as
//! the process, shared by layers built from one store, so a config reload keeps it) and, with
//! the `redb` feature, [`RedbStore`](crate::RedbStore) (an embedded file; a restart keeps the
//! month's spend to the picodollar). Several processes sharing one budget keep their books in
//! Redis instead, reservations included (feature `redis`: `RedisBooks` with
//! `BudgetLayer::configured_with_redis`).

use std::fmt;

use crate::ledger::Spend;

/// A store of spend per (budget, slot); see the [module docs](self).
///
/// Calls come from the task that ends a response body: implementations keep them short.
pub trait SpendStore: Send + Sync + fmt::Debug + 'static {
    /// Every slot of `budget` with its spend.
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    fn load(&self, budget: &str) -> Result<Vec<(i64, Spend)>, StoreError>;

    /// Adds `spend` to the slot of `budget` starting at `slot` (Unix seconds).
    ///
    /// # Errors
    ///
    /// The store cannot be written.
    fn add(&self, budget: &str, slot: i64, spend: Spend) -> Result<(), StoreError>;

    /// Forgets the slots of `budget` that start before `before`: they no longer count.
    ///
    /// # Errors
    ///
    /// The store cannot be written.
    fn prune(&self, budget: &str, before: i64) -> Result<(), StoreError>;
}

/// One store behind several sets of books (a gateway's, rebuilt when its budgets change):
/// each writes to it.
impl<T: SpendStore> SpendStore for std::sync::Arc<T> {
    fn load(&self, budget: &str) -> Result<Vec<(i64, Spend)>, StoreError> {
        (**self).load(budget)
    }

    fn add(&self, budget: &str, slot: i64, spend: Spend) -> Result<(), StoreError> {
        (**self).add(budget, slot, spend)
    }

    fn prune(&self, budget: &str, before: i64) -> Result<(), StoreError> {
        (**self).prune(budget, before)
    }
}

/// A store that cannot be read or written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spend store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}
