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
/// `K` is where the books are kept: [`LocalBooks`] (this process, the default) or, with the
/// `redis` feature, `RedisBooks` (a fleet's, through Redis; `configured_with_redis`).
///
/// # Clone
///
/// Clones share one set of budgets (the same books, the same store): every service made by
/// any clone counts against the same limits.
#[derive(Clone, Debug)]
pub struct BudgetLayer<K = LocalBooks> {
    pub(crate) budgets: Arc<Budgets>,
    pub(crate) books: K,
}

/// Books kept in this process: each budget's ledger behind a lock of its own, spend persisted
/// in a [`SpendStore`]. A call is reserved synchronously, in `call`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalBooks;

impl<K> BudgetLayer<K> {
    /// The prices calls are charged at.
    pub fn prices(&self) -> &PriceTable {
        &self.budgets.prices
    }
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
            books: LocalBooks,
        })
    }

    /// Every budget as it stands: spent, reserved, when it resets.
    pub fn snapshot(&self) -> Vec<BudgetSnapshot> {
        self.budgets.snapshot()
    }
}

impl<S, K: Clone> Layer<S> for BudgetLayer<K> {
    type Service = Budget<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::new(inner, self.budgets.clone(), self.books.clone())
    }
}

#[cfg(feature = "redis")]
mod fleet {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use tollgate_core::config::ConfigError;
    use tollgate_core::{BoxError, TokioClock};

    use super::BudgetLayer;
    use crate::budgets::{BudgetScope, BudgetSnapshot, BudgetState, Budgets};
    use crate::config::BudgetConfig;
    use crate::ledger::Ledger;
    use crate::memory::MemoryStore;
    use crate::redis::{Fleet, RedisBooks};

    impl BudgetLayer<RedisBooks> {
        /// The layer `config` describes, with its books in Redis through `books`: shared by
        /// every process that uses the same Redis and prefix (see [`RedisBooks`]). Each call
        /// is reserved by a round trip in its response future. Starts a background task on
        /// the runtime `books` was connected on, which ends with the layer and its services.
        ///
        /// # Errors
        ///
        /// A setting that is not usable ([`BudgetConfig::validate`]).
        pub fn configured_with_redis(
            config: &BudgetConfig,
            books: RedisBooks,
        ) -> Result<Self, ConfigError> {
            let (checked, prices, worst) = config.checked()?;
            let mut tenants = HashSet::new();
            let budgets = checked
                .into_iter()
                .map(|budget| {
                    if let BudgetScope::Tenant(name) = &budget.scope {
                        tenants.insert(name.clone());
                    }
                    BudgetState {
                        name: budget.name,
                        scope: budget.scope,
                        limits: budget.limits,
                        window: budget.window,
                        soft_threshold_ppm: budget.soft_threshold_ppm,
                        // The local books, used while Redis is unreachable.
                        ledger: Mutex::new(Ledger::default()),
                    }
                })
                .collect();
            let budgets = Arc::new(Budgets {
                budgets,
                prices,
                worst,
                // Spend is kept in Redis.
                store: Arc::new(MemoryStore::new()),
                clock: Arc::new(TokioClock),
                tenants,
            });
            let fleet = Fleet::start(&books, budgets.clone());
            Ok(Self {
                budgets,
                books: RedisBooks {
                    link: books.link,
                    fleet: Some(fleet),
                },
            })
        }

        fn fleet(&self) -> &Arc<Fleet> {
            self.books
                .fleet
                .as_ref()
                .expect("a layer's books are bound to its budgets")
        }

        /// Every budget as the fleet's books stand: spent and reserved across the fleet as
        /// Redis reported them on this process's last round trip (at most a renewal, 5 s,
        /// ago), plus what this process settled and has not sent yet. [`flush`](Self::flush)
        /// first for the books as they are now.
        pub fn snapshot(&self) -> Vec<BudgetSnapshot> {
            self.fleet().snapshot()
        }

        /// Sends what this process settled, renews its calls' reservations and reads every
        /// budget from Redis (one round trip, at most the command timeout).
        ///
        /// # Errors
        ///
        /// Redis did not answer (the settlements stay queued).
        pub async fn flush(&self) -> Result<(), BoxError> {
            self.fleet().sync(true, false).await
        }

        /// The books: their options, and whether Redis is reachable.
        pub fn books(&self) -> &RedisBooks {
            &self.books
        }
    }
}
