//! [`RedbStore`]: spend in an embedded redb file, so that a restart keeps it.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::Usd;
use crate::ledger::Spend;
use crate::store::{SpendStore, StoreError};

/// (budget name, slot start) → (picodollars, tokens).
const SPEND: TableDefinition<'_, (&str, i64), (u64, u64)> = TableDefinition::new("budget_spend");

/// Spend per (budget, slot) in a redb file; see [`SpendStore`].
///
/// Each settled call is one write transaction, committed with redb's eventual durability: it
/// is in the file when the commit returns (a crashed *process* loses nothing), and on disk
/// once the operating system writes it back (a power loss may lose the last moments). The
/// file holds one small row per budget and slot; past slots are deleted as windows move.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

fn io(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if it does not exist.
    ///
    /// # Errors
    ///
    /// The file cannot be created or is not a redb database.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = Database::create(path.as_ref()).map_err(io)?;
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(SPEND).map_err(io)?;
        txn.commit().map_err(io)?;
        Ok(Self { db })
    }
}

impl SpendStore for RedbStore {
    fn load(&self, budget: &str) -> Result<Vec<(i64, Spend)>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(SPEND).map_err(io)?;
        let mut out = Vec::new();
        for row in table
            .range((budget, i64::MIN)..=(budget, i64::MAX))
            .map_err(io)?
        {
            let (key, value) = row.map_err(io)?;
            let (picos, tokens) = value.value();
            out.push((
                key.value().1,
                Spend {
                    usd: Usd::from_picos(picos),
                    tokens,
                },
            ));
        }
        Ok(out)
    }

    fn add(&self, budget: &str, slot: i64, spend: Spend) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(Durability::Eventual);
        {
            let mut table = txn.open_table(SPEND).map_err(io)?;
            let (picos, tokens) = table
                .get((budget, slot))
                .map_err(io)?
                .map_or((0, 0), |v| v.value());
            let sum = (
                picos.saturating_add(spend.usd.picos()),
                tokens.saturating_add(spend.tokens),
            );
            table.insert((budget, slot), sum).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    fn prune(&self, budget: &str, before: i64) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(Durability::Eventual);
        {
            let mut table = txn.open_table(SPEND).map_err(io)?;
            table
                .retain_in((budget, i64::MIN)..(budget, before), |_, _| false)
                .map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}
