//! [`Books`]: where a stack's budgets keep their books.

#[cfg(feature = "budget-redis")]
use tollgate_budget::RedisBooks;
use tollgate_budget::{Budget, BudgetLayer, BudgetSnapshot, PriceTable};
use tower::Layer;

/// Where a stack's budgets keep their books: in this process (a [`BudgetLayer`] over memory, or
/// over a file that outlives restarts), or in Redis, shared by every replica of a fleet
/// (`[redis]`; feature `budget-redis`). Clones share the books.
#[derive(Clone, Debug)]
pub enum Books {
    /// Kept by this process.
    Local(BudgetLayer),
    /// Kept in Redis: no replica's calls overshoot a budget the fleet shares.
    #[cfg(feature = "budget-redis")]
    Fleet(BudgetLayer<RedisBooks>),
}

impl Books {
    /// Every budget as it stands (for a fleet's books, as Redis last reported it, with this
    /// process's settlements not yet sent).
    pub fn snapshot(&self) -> Vec<BudgetSnapshot> {
        match self {
            Self::Local(layer) => layer.snapshot(),
            #[cfg(feature = "budget-redis")]
            Self::Fleet(layer) => layer.snapshot(),
        }
    }

    /// The prices calls are charged at.
    pub fn prices(&self) -> &PriceTable {
        match self {
            Self::Local(layer) => layer.prices(),
            #[cfg(feature = "budget-redis")]
            Self::Fleet(layer) => layer.prices(),
        }
    }
}

impl From<BudgetLayer> for Books {
    fn from(layer: BudgetLayer) -> Self {
        Self::Local(layer)
    }
}

#[cfg(feature = "budget-redis")]
impl From<BudgetLayer<RedisBooks>> for Books {
    fn from(layer: BudgetLayer<RedisBooks>) -> Self {
        Self::Fleet(layer)
    }
}

#[cfg(not(feature = "budget-redis"))]
impl<S> Layer<S> for Books {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        match self {
            Self::Local(layer) => layer.layer(inner),
        }
    }
}

#[cfg(feature = "budget-redis")]
impl<S> Layer<S> for Books {
    type Service = tower::util::Either<Budget<S>, Budget<S, RedisBooks>>;

    fn layer(&self, inner: S) -> Self::Service {
        match self {
            Self::Local(layer) => tower::util::Either::Left(layer.layer(inner)),
            Self::Fleet(layer) => tower::util::Either::Right(layer.layer(inner)),
        }
    }
}
